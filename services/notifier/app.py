"""The notifier service: e-mail and SMS on behalf of the others."""

import smtplib

from services.notifier import handlers
from services.notifier.config import get_settings
from services.notifier.mailer import SmtpMailer
from shared.contracts import UserSignedUp
from shared.service import Service

settings = get_settings()

#: Errors worth retrying: the server is away or busy. Anything else is permanent.
TRANSIENT = (ConnectionError, TimeoutError, smtplib.SMTPServerDisconnected)

service = Service(
    "notifier",
    settings=settings,
    dependencies={
        "mailer": lambda: SmtpMailer(
            settings.smtp_host, settings.smtp_port, settings.mail_from, settings.smtp_timeout
        ),
    },
)
service.handles(
    UserSignedUp,
    autoretry_for=TRANSIENT,
    max_retries=5,
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
)(handlers.send_welcome_email)

app = service.celery
