"""Notifier settings: where mail and SMS go out, who the admins are, how long a send may take."""

from functools import lru_cache

from pydantic import Field, model_validator

from shared import Settings


class NotifierSettings(Settings):
    smtp_host: str = Field("127.0.0.1", description="SMTP server host.")
    smtp_port: int = Field(8025, description="SMTP server port.")
    smtp_timeout: float = Field(10.0, description="Seconds before an SMTP call gives up.")
    mail_from: str = Field("noreply@example.com", description="Sender of every e-mail.")
    admin_emails: str = Field("admin@example.com", description="Comma-separated admin addresses.")
    sms_gateway_url: str = Field(
        "http://127.0.0.1:8026", description="HTTP SMS gateway; messages are POSTed to /messages."
    )
    sms_timeout: float = Field(10.0, description="Seconds before an SMS gateway call gives up.")
    send_soft_time_limit: int = Field(
        30, description="Seconds a send may take before it is interrupted and retried."
    )
    send_time_limit: int = Field(
        60, description="Seconds before a stuck send's process is killed (dead-lettered)."
    )

    @model_validator(mode="after")
    def _soft_limit_first(self) -> "NotifierSettings":
        """The prefork pool arms the hard limit only when the soft one fires, so a soft limit
        at or above the hard one would silently stretch the hard limit to the soft one."""
        if self.send_soft_time_limit >= self.send_time_limit:
            raise ValueError("SEND_SOFT_TIME_LIMIT must be below SEND_TIME_LIMIT")
        return self

    @property
    def admins(self) -> list[str]:
        return [a.strip() for a in self.admin_emails.split(",") if a.strip()]


@lru_cache
def get_settings() -> NotifierSettings:
    return NotifierSettings()
