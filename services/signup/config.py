"""Signup settings: the SMS gateway, and how long the API waits for its dependencies."""

from functools import lru_cache

from pydantic import Field

from shared.settings import Settings


class SignupSettings(Settings):
    sms_gateway_url: str = Field(
        "http://127.0.0.1:8026", description="Base URL of the SMS gateway (POST /messages)."
    )
    sms_timeout: float = Field(
        5.0, description="Seconds a signup waits for the SMS gateway before answering 503."
    )
    broker_timeout: float = Field(
        1.0,
        description="Seconds the API waits to reach RabbitMQ (after-commit publish, /healthz) "
        "before leaving the event to the outbox relay.",
    )
    user_stats_timeout: float = Field(
        5.0, description="Seconds the signup.user_stats query may run before it is cancelled."
    )


@lru_cache
def get_settings() -> SignupSettings:
    return SignupSettings()
