"""How a service declares itself: its name, the events it handles, the commands it serves.

    service = Service("notifier", dependencies={"mailer": make_mailer})

    @service.handles(UserSignedUp, autoretry_for=(SMTPException,), max_retries=5)
    def send_welcome_email(event: UserSignedUp, session, mailer): ...

    @service.command(SendEmail)
    def send_email(command: SendEmail, task, mailer): ...

Each handler is its own task (``notifier.send_welcome_email``) with its own retry policy.
An event arrives as one task named after its type (``user.signed_up``) on ``notifier.events``;
that entry task validates the envelope and dispatches one task per handler to
``notifier.tasks``, ids derived from the event id so a redelivered event dispatches the
same ids again. Handlers name their dependencies as parameters, resolved once at
registration: ``task`` (the bound Celery task), ``session`` (a transaction that commits
when the handler returns), ``publish``/``send`` (emit an event, send a command), and any
name given in ``dependencies`` (a factory, called once per process).
"""

import inspect
import logging
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, uuid5

from celery import Celery
from celery.exceptions import Reject
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.app import create_celery_app
from shared.contracts import Command, Event
from shared.db import Database
from shared.settings import Settings, get_settings
from shared.topology import declare_service, service

logger = logging.getLogger(__name__)
H = TypeVar("H", bound=Callable[..., Any])
#: The database is away (restarting, failing over, a connection cut mid-transaction): the
#: handler's transaction did not commit, so the task is retried, not dead-lettered.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_RETRY_DELAY = 5


class InvalidMessage(ValueError):
    """A message whose body does not match its contract: dead-lettered, never retried."""


class Service:
    def __init__(
        self,
        name: str,
        *,
        settings: Settings | None = None,
        dependencies: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.topology = service(name)
        self.settings = settings or get_settings()
        self.db = Database(self.settings.database_url)
        self._factories = dict(dependencies or {})
        self._instances: dict[str, Any] = {}
        self._routes: dict[str, str] = {}
        self._handlers: dict[str, list[Any]] = {}
        self._declared = False
        self.celery: Celery = create_celery_app(self.topology, self.settings, self._routes)

    @property
    def name(self) -> str:
        return self.topology.name

    # -- declaring handlers -------------------------------------------------------------

    def handles(self, event_cls: type[Event], **task_options: Any) -> Callable[[H], H]:
        """Register a handler of ``event_cls`` as its own task ``<service>.<function>``."""
        event_type = event_cls.model_fields["type"].default
        if event_type not in self.topology.subscribes:
            raise ValueError(
                f"{self.name} handles {event_type!r} but topology.SERVICES does not bind it"
            )

        def decorate(handler: H) -> H:
            task = self._task(handler, event_cls, "event", self.topology.tasks_queue, task_options)
            if event_type not in self._handlers:
                self._handlers[event_type] = []
                self._entry_task(event_cls)
            self._handlers[event_type].append(task)
            return handler

        return decorate

    def command(self, command_cls: type[Command], **task_options: Any) -> Callable[[H], H]:
        """Register the handler of a command other services send (``command_cls.task``)."""
        if command_cls.task.split(".", 1)[0] != self.name:
            raise ValueError(f"{command_cls.task!r} is not a command of {self.name}")

        def decorate(handler: H) -> H:
            self._task(handler, command_cls, None, self.topology.tasks_queue, task_options)
            return handler

        return decorate

    def _entry_task(self, event_cls: type[Event]) -> None:
        event_type = event_cls.model_fields["type"].default
        self._routes[event_type] = self.topology.events_queue

        @self.celery.task(name=event_type, bind=True, ignore_result=True, shared=False)
        def dispatch(task, *args: Any, **kwargs: Any) -> None:
            event = _validate(event_cls, "event", args, kwargs)
            for handler_task in self._handlers[event_type]:
                handler_task.apply_async(
                    kwargs={"event": event.model_dump(mode="json")},
                    task_id=str(uuid5(NAMESPACE_URL, f"{event.id}/{handler_task.name}")),
                )

    def _task(
        self,
        handler: Callable[..., Any],
        contract: type[BaseModel],
        key: str | None,
        queue: str,
        task_options: dict[str, Any],
    ):
        name = getattr(contract, "task", None) if key is None else None
        name = name or f"{self.name}.{handler.__name__}"
        self._routes[name] = queue
        deps = list(inspect.signature(handler).parameters)[1:]

        @self.celery.task(name=name, bind=True, shared=False, **task_options)
        def run(task, *args: Any, **kwargs: Any) -> Any:
            message = _validate(contract, key, args, kwargs)
            try:
                with ExitStack() as stack:
                    resolved = {d: self._resolve(d, task, stack) for d in deps}
                    return handler(message, **resolved)
            except DATABASE_UNAVAILABLE as exc:
                logger.warning(
                    "%s[%s]: database unavailable, retrying: %s", name, task.request.id, exc
                )
                raise task.retry_after_outage(exc, DATABASE_RETRY_DELAY) from None

        return run

    def _resolve(self, name: str, task: Any, stack: ExitStack) -> Any:
        if name == "task":
            return task
        if name == "session":
            return stack.enter_context(self.db.transaction())
        if name == "publish":
            return self.publish
        if name == "send":
            return self.send
        if name not in self._instances:
            try:
                self._instances[name] = self._factories[name]()
            except KeyError:
                raise LookupError(f"{self.name}: no dependency named {name!r}") from None
        return self._instances[name]

    # -- talking to other services -------------------------------------------------------

    def _ensure_declared(self) -> None:
        if not self._declared:
            with self.celery.connection_for_write() as conn:
                declare_service(conn.default_channel, self.topology)
            self._declared = True

    def publish(self, event: Event) -> None:
        """Publish a domain event to ``events`` (confirmed by the broker before returning)."""
        self._ensure_declared()
        self.publish_body(event.type, event.model_dump(mode="json"), event.id)

    def publish_body(self, event_type: str, body: dict, event_id: Any, **options: Any) -> None:
        """Publish an event already in its JSON form (what the outbox stores), in the wire
        format the README documents; ``options`` go to Celery's ``send_task``."""
        if event_type not in self.topology.publishes:
            raise ValueError(f"{self.name} may not publish {event_type!r}")
        self.celery.send_task(
            event_type,
            kwargs={"event": body},
            task_id=str(event_id),
            declare=[],
            ignore_result=True,
            **options,
        )

    def send(self, command: Command, **options: Any) -> str:
        """Send a command to the service that owns it; returns the task id.

        The command's result is stored by its owner, in the owner's schema: read it
        through that service (e.g. signup's ``GET /tasks/{id}``) or an app of the owner,
        not through this service's result backend.
        """
        self._ensure_declared()
        return self.celery.send_task(
            command.task, kwargs=command.model_dump(mode="json"), declare=[], **options
        ).id


def _validate(contract: type[BaseModel], key: str | None, args: tuple, kwargs: dict) -> Any:
    """Parse the message into its contract, or dead-letter it with the validation errors."""
    data = kwargs.get(key) if key else kwargs
    if args or (key and set(kwargs) != {key}):
        expected = f"kwargs {{'{key}': {{...}}}}" if key else "keyword arguments only"
        exc = InvalidMessage(f"{contract.__name__}: expected {expected}")
        raise Reject(exc, requeue=False)
    try:
        return contract.model_validate(data)
    except ValidationError as err:
        raise Reject(
            InvalidMessage(f"{contract.__name__}: {_describe(err)}"), requeue=False
        ) from None


def _describe(err: ValidationError) -> str:
    """Which fields failed and why, without their values: this text reaches the logs and
    the dead letter's headers, and the values are personal data (the body keeps them)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}"
        for e in err.errors(include_url=False, include_input=False)
    )
