"""Signup settings: the SMS gateway, how long the API waits for its dependencies, and the
API's edge (its token, the largest body it reads)."""

from functools import lru_cache

from pydantic import Field, SecretStr

from shared import Settings

LOCAL_API_TOKEN = "signup-local"


class SignupSettings(Settings):
    sms_gateway_url: str = Field(
        "http://127.0.0.1:8026", description="Base URL of the SMS gateway (POST /messages)."
    )
    sms_timeout: float = Field(
        5.0, description="Seconds a signup waits for the SMS gateway before answering 503."
    )
    broker_timeout: float = Field(
        1.0,
        description="Seconds the API waits to reach RabbitMQ (after-commit publish) "
        "before leaving the event to the outbox relay.",
    )
    user_stats_timeout: float = Field(
        5.0, description="Seconds the signup.user_stats query may run before it is cancelled."
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token for GET /users/{id} and GET /tasks/{id} (operators: they"
        f" show personal data and tracebacks). Required unless LOCAL_MODE ('{LOCAL_API_TOKEN}').",
    )
    max_body_bytes: int = Field(
        16 * 1024, description="Largest request body the API reads; more is answered 413."
    )
    retry_after: int = Field(
        5, description="Seconds a 503 answer asks the client to wait (Retry-After)."
    )
    readiness_timeout: float = Field(
        2.0, description="Seconds /readyz waits for the database before answering 503."
    )

    def required_api_token(self) -> str:
        """The API token, the local default only in local mode; else a clear refusal."""
        if self.api_token is not None and self.api_token.get_secret_value():
            return self.api_token.get_secret_value()
        if self.local_mode:
            return LOCAL_API_TOKEN
        raise RuntimeError(
            "API_TOKEN is not set: the signup API will not serve personal data without it"
            " (LOCAL_MODE=1 uses the local default, on a developer's machine only)"
        )


@lru_cache
def get_settings() -> SignupSettings:
    return SignupSettings()
