"""Event contracts: the published language between services.

An event is an envelope (id, type, version, occurred_at, source) around a typed payload.
The id is stable across re-publishes, so consumers deduplicate on it. Each contract is
keyed by its ``type`` and ``version`` literals (``Event.registry``).

Evolution (the README's rule, checked by ``tests/unit/test_contract_compatibility.py``):
a published (type, version) never changes except that its payload may gain *optional*
fields; readers ignore payload fields they do not know (payloads are ``extra="ignore"``,
the envelope stays strict). Anything else (a field removed, renamed, retyped, rebounded,
or a new required one) is a new version: a new class whose payload keeps every field of
the previous version unchanged, and an ``upcaster`` from the previous version, so a
consumer on either version reads both (``shared.evolution``).

Every string is bounded: a contract is also what the receiving service can store, and
the columns that store a field take their size from it (``max_length``), so what one
service may publish the next can always keep.
"""

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID, uuid4

from annotated_types import MaxLen
from pydantic import BaseModel, ConfigDict, EmailStr, Field

#: RFC 5321's limit on a forward path.
EMAIL_MAX = 320


class Event(BaseModel):
    """Base envelope; subclasses pin ``type``/``version`` and type the payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    registry: ClassVar[dict[tuple[str, int], type["Event"]]] = {}

    id: UUID = Field(default_factory=uuid4)
    type: str = Field(max_length=100)
    version: int
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = Field(max_length=100)
    payload: Any

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        event_type = cls.model_fields["type"].default
        version = cls.model_fields["version"].default
        if isinstance(event_type, str) and isinstance(version, int):
            Event.registry[(event_type, version)] = cls


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


def max_length(model: type[BaseModel], field: str) -> int:
    """A string field's bound: what a column storing it must hold."""
    bounds = [m.max_length for m in model.model_fields[field].metadata if isinstance(m, MaxLen)]
    if not bounds:
        raise LookupError(f"{model.__name__}.{field} has no max_length")
    return bounds[0]


def event_types() -> set[str]:
    """Every event type with a contract, whatever its versions."""
    return {event_type for event_type, _ in Event.registry}


def event_class(event_type: str, version: int | None = None) -> type[Event]:
    """The contract of (type, version), the newest version when None; KeyError if none."""
    if version is None:
        versions = [v for t, v in Event.registry if t == event_type]
        if not versions:
            raise KeyError(event_type)
        version = max(versions)
    return Event.registry[(event_type, version)]


#: How an event of (type, version) becomes version + 1, on its JSON form.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upcaster(
    event_type: str, version: int
) -> Callable[
    [Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]
]:
    """Register the function that turns ``version`` of ``event_type`` into the next one."""

    def register(
        fn: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        UPCASTERS[(event_type, version)] = fn
        return fn

    return register


@upcaster("user.signed_up", 1)
def _signed_up_v1_to_v2(event: dict[str, Any]) -> dict[str, Any]:
    """Every v1 user was welcomed in English: that is the locale v1 implies."""
    return {**event, "version": 2, "payload": {**event["payload"], "locale": "en"}}


class Command(BaseModel):
    """A request to one service; ``task`` names the service that owns it (before the dot)
    and the task that serves it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    registry: ClassVar[dict[str, type["Command"]]] = {}
    task: ClassVar[str]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        if isinstance(cls.__dict__.get("task"), str):
            Command.registry[cls.task] = cls

    @classmethod
    def owner(cls) -> str:
        """The service that serves this command."""
        return cls.task.split(".", 1)[0]


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
