"""The signup service: owns users, publishes ``user.signed_up``, serves ``signup.user_stats``."""

from contracts import UserStats
from services.signup import handlers
from services.signup.config import SignupSettings, get_settings
from shared import Service


def build_service(settings: SignupSettings) -> Service:
    """The signup service with its commands registered, configured by ``settings``."""
    service = Service("signup", settings=settings, dependencies={"settings": lambda: settings})
    service.command(UserStats)(handlers.user_stats)
    return service


service = build_service(get_settings())
app = service.celery
