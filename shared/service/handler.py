"""A handler as registered, and what it is given: its message parsed into its contract
(an invalid one dead-lettered with which fields failed, never their values) and its
``on_failure`` hook, called for its final failure only."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import Reject
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.worker.app import BROKER_AWAY

#: The database is away (restarting, failing over, a connection cut mid-transaction): the
#: handler's transaction did not commit, so the task is retried, not dead-lettered.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_RETRY_DELAY = 5


class InvalidMessage(ValueError):
    """A message whose body does not match its contract: dead-lettered, never retried."""


@dataclass(frozen=True)
class Handler:
    """A handler as registered: the function, the contract of its message, where the
    message sits in the task's keyword arguments (``event``; None: all of them), and the
    dependencies it names."""

    fn: Callable[..., Any]
    contract: type[BaseModel]
    key: str | None
    deps: list[str]

    def parse(self, kwargs: dict[str, Any]) -> Any:
        """The message as the worker would validate it; ``Reject`` if it is invalid."""
        return validate(self.contract, self.key, (), kwargs)


def final_only(hook: Callable[..., Any]) -> Callable[..., Any]:
    """A task's ``on_failure`` for its final failure only. Celery's tracer calls it for any
    exception; the broker's (``BROKER_AWAY``) requeues the message, which runs again, so
    a final-failure report then (an event saying the work failed) would be false."""

    @functools.wraps(hook)
    def on_failure(task: Any, exc: BaseException, *args: Any) -> Any:
        return None if isinstance(exc, BROKER_AWAY) else hook(task, exc, *args)

    return on_failure


class Validated(dict[str, Any]):
    """A message in its JSON form that also carries the model it was validated as: what an
    entry task hands its inline handlers, so that each does not validate the event again
    (``EmailStr`` alone costs ~0.1 ms). As a message (a handler's own, a dead letter, a
    result row) it is the plain dict."""

    def __init__(self, model: BaseModel) -> None:
        super().__init__(model.model_dump(mode="json"))
        self.model = model


def validate(
    contract: type[BaseModel], key: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Parse the message into its contract, or dead-letter it with the validation errors."""
    data = kwargs.get(key) if key else kwargs
    if isinstance(data, Validated) and type(data.model) is contract and set(kwargs) == {key}:
        return data.model  # an inline handler's event, validated by its entry task
    if args or (key and set(kwargs) != {key}):
        expected = f"kwargs {{'{key}': {{...}}}}" if key else "keyword arguments only"
        exc = InvalidMessage(f"{contract.__name__}: expected {expected}")
        raise Reject(exc, requeue=False)
    try:
        return contract.model_validate(data)
    except ValidationError as err:
        raise Reject(
            InvalidMessage(f"{contract.__name__}: {describe(err)}"), requeue=False
        ) from None


def describe(err: ValidationError) -> str:
    """Which fields failed and why, without their values: this text reaches the logs and
    the dead letter's headers, and the values are personal data (the body keeps them)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}"
        for e in err.errors(include_url=False, include_input=False)
    )
