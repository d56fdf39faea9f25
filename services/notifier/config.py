"""Notifier settings: where mail goes out and who the admins are."""

from functools import lru_cache

from pydantic import Field

from shared.settings import Settings


class NotifierSettings(Settings):
    smtp_host: str = Field("127.0.0.1", description="SMTP server host.")
    smtp_port: int = Field(8025, description="SMTP server port.")
    smtp_timeout: float = Field(10.0, description="Seconds before an SMTP call gives up.")
    mail_from: str = Field("noreply@example.com", description="Sender of every e-mail.")
    admin_emails: str = Field("admin@example.com", description="Comma-separated admin addresses.")

    @property
    def admins(self) -> list[str]:
        return [a.strip() for a in self.admin_emails.split(",") if a.strip()]


@lru_cache
def get_settings() -> NotifierSettings:
    return NotifierSettings()
