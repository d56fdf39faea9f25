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
consumer on either version reads both (``shared.contracts.evolution``).

Every string is bounded: a contract is also what the receiving service can store, and
the columns that store a field take their size from it (``max_length``), so what one
service may publish the next can always keep.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from annotated_types import MaxLen
from pydantic import BaseModel, ConfigDict, Field

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
