"""The system's published language: every event and command its services exchange.

The services own these models, not the platform (``shared`` names no service): they live
here, beside the JSON Schema documents generated from them (``events/``, ``commands/``,
``asyncapi.json``; ``eventful contracts write``). The bases, the registry by (type,
version), the bounds and the evolution rules are the platform's (``shared.Event``,
``shared.Command``, ``shared.upcaster``): read ``shared/contracts/models.py`` for them.
Importing this package registers every contract, which is what the system module
(``services``) does, so every platform tool sees the whole language.
"""

from datetime import date
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared import EMAIL_MAX, Command, Event, upcaster


class UserSignedUpPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user_id: UUID
    email: EmailStr = Field(max_length=EMAIL_MAX)
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=32)


class UserSignedUp(Event):
    type: Literal["user.signed_up"] = "user.signed_up"
    version: Literal[1] = 1
    payload: UserSignedUpPayload


class UserSignedUpV2Payload(UserSignedUpPayload):
    #: A BCP 47 language tag ("en", "pt-BR"): the language the user reads.
    locale: str = Field(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")


class UserSignedUpV2(Event):
    """v2 adds the user's ``locale`` (required: a new version, not an optional field)."""

    type: Literal["user.signed_up"] = "user.signed_up"
    version: Literal[2] = 2
    payload: UserSignedUpV2Payload


class NotificationPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    delivery_id: str = Field(max_length=200)
    kind: str = Field(max_length=100)
    channel: Literal["email", "sms"]
    #: Who it went to, for people: a long list of recipients is summarised to fit.
    recipient: str = Field(max_length=1000)
    caused_by: UUID | None = None
    error: str | None = Field(None, max_length=1000)


class NotificationSent(Event):
    type: Literal["notification.sent"] = "notification.sent"
    version: Literal[1] = 1
    payload: NotificationPayload


class NotificationFailed(Event):
    type: Literal["notification.failed"] = "notification.failed"
    version: Literal[1] = 1
    payload: NotificationPayload


class ReportGeneratedPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    report_id: UUID
    kind: str = Field(max_length=20)
    day: str = Field(max_length=10)
    summary: dict[Annotated[str, Field(max_length=100)], int] = Field(max_length=100)


class ReportGenerated(Event):
    type: Literal["report.generated"] = "report.generated"
    version: Literal[1] = 1
    payload: ReportGeneratedPayload


@upcaster("user.signed_up", 1)
def _signed_up_v1_to_v2(event: dict[str, Any]) -> dict[str, Any]:
    """Every v1 user was welcomed in English: that is the locale v1 implies."""
    return {**event, "version": 2, "payload": {**event["payload"], "locale": "en"}}


class SendEmail(Command):
    task: ClassVar[str] = "notifier.send_email"
    to: EmailStr = Field(max_length=EMAIL_MAX)
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(max_length=100_000)
    attachment: str | None = Field(None, max_length=2000)


class SendSms(Command):
    task: ClassVar[str] = "notifier.send_sms"
    to: str = Field(pattern=r"^\+?[0-9]{6,16}$", max_length=17)
    text: str = Field(min_length=1, max_length=480)


class UserStats(Command):
    """Signups per UTC day over the last ``days`` days, and the total; answered by signup."""

    task: ClassVar[str] = "signup.user_stats"
    days: int = Field(7, ge=1, le=366)


class GenerateReport(Command):
    """Build (or rebuild) the report of ``kind`` for the period starting on ``day``."""

    task: ClassVar[str] = "reports.generate_report"
    kind: Literal["daily", "weekly"]
    day: date
