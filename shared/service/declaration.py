"""How a service declares itself: its name, the events it handles, the commands it serves.

    service = Service("mail", dependencies={"mailer": make_mailer})

    @service.handles(UserSignedUp, retry=RetryPolicy(autoretry_for=(SMTPException,)))
    def send_welcome_email(event: UserSignedUp, session, mailer): ...

    @service.task(time_limit=60)
    def render(document: dict, db, publish): ...

Each handler is its own task (``mail.send_welcome_email``) with its own retry policy.
An event arrives as one task named after its type (``user.signed_up``) on ``mail.events``;
that entry task validates the envelope and runs each handler as its own task, inside
itself (``shared.worker.inline``: retries and dead letters are still the handler's, on
``mail.tasks``), ids derived from the event id so a redelivered event runs the same ids
again. Handlers name their dependencies as parameters, resolved once at
registration: ``task`` (the bound Celery task), ``session`` (a transaction that commits
when the handler returns), ``db`` (the service's database), ``publish``/``send`` (emit an
event, send a command), and any name given in ``dependencies`` (a factory, called once
per process). A handler's retry policy is a ``RetryPolicy`` named beside it.
"""

import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, uuid5

from celery import Celery
from celery.exceptions import Reject
from pydantic import BaseModel

from shared.contracts.evolution import UnsupportedVersion, contract_of, read_as
from shared.contracts.models import Command, Event
from shared.core.db import Database
from shared.core.retry import RetryPolicy, checked_task_options
from shared.core.settings import Settings, get_settings
from shared.core.topology import ServiceTopology, service
from shared.service.handler import (
    DATABASE_RETRY_DELAY,
    DATABASE_UNAVAILABLE,
    Handler,
    Validated,
    final_only,
    validate,
)
from shared.service.publishing import Publishing
from shared.worker.app import create_celery_app
from shared.worker.inline import Step, can_inline, run_inline, settle_killed, share_time_limits
from shared.worker.progress import note

logger = logging.getLogger(__name__)
H = TypeVar("H", bound=Callable[..., Any])
#: Dependencies every service provides, besides those it declares.
BUILT_IN = frozenset({"task", "session", "db", "publish", "send"})


def handler_task_id(event_id: Any, task_name: str) -> str:
    """The id a handler of an event runs as: the same again when the event is redelivered."""
    return str(uuid5(NAMESPACE_URL, f"{event_id}/{task_name}"))


class Service(Publishing):
    def __init__(
        self,
        name: str | ServiceTopology,
        *,
        settings: Settings | None = None,
        dependencies: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.topology = name if isinstance(name, ServiceTopology) else service(name)
        self.settings = settings or get_settings()
        self.db = Database(self.settings.database_url)
        self._factories = dict(dependencies or {})
        self._instances: dict[str, Any] = {}
        #: Dependencies resolved as given instead (a test kit's fakes: ``replaced``).
        self._replaced: dict[str, Any] = {}
        self._routes: dict[str, str] = {}
        #: Per event type, each handler's task and the contract (version) it was written for.
        self._handlers: dict[str, list[tuple[Any, type[Event]]]] = {}
        self._entries: dict[str, Any] = {}
        #: Each handler of an event or command, by task name (``shared.service.testing`` runs them).
        self.handlers: dict[str, Handler] = {}
        #: Each task's retry policy, by task name (read by the startup check).
        self._declared = False
        self.celery: Celery = create_celery_app(self.topology, self.settings, self._routes)

    # -- declaring handlers -------------------------------------------------------------

    def handles(
        self, event_cls: type[Event], *, retry: RetryPolicy | None = None, **task_options: Any
    ) -> Callable[[H], H]:
        """Register a handler of ``event_cls`` as its own task ``<service>.<function>``."""
        event_type = event_cls.model_fields["type"].default
        if event_type not in self.topology.subscribes:
            raise ValueError(
                f"{self.name} handles {event_type!r} but its declaration does not subscribe to it"
            )

        def decorate(handler: H) -> H:
            options = self._options(handler, retry, task_options)
            task = self._task(handler, event_cls, "event", self.topology.tasks_queue, options)
            if event_type not in self._handlers:
                self._handlers[event_type] = []
                self._entries[event_type] = self._entry_task(event_cls)
            self._handlers[event_type].append((task, event_cls))
            inline = [t for t, _ in self._handlers[event_type] if can_inline(t)]
            share_time_limits(self._entries[event_type], inline)
            return handler

        return decorate

    def command(
        self, command_cls: type[Command], *, retry: RetryPolicy | None = None, **task_options: Any
    ) -> Callable[[H], H]:
        """Register the handler of a command other services send (``command_cls.task``)."""
        if command_cls.owner() != self.name:
            raise ValueError(f"{command_cls.task!r} is not a command of {self.name}")

        def decorate(handler: H) -> H:
            options = self._options(handler, retry, task_options)
            self._task(handler, command_cls, None, self.topology.tasks_queue, options)
            return handler

        return decorate

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        **task_options: Any,
    ) -> Any:
        """Register one of the service's own steps (a workflow's, beat's) as the task
        ``<service>.<function>``, and return the task, as Celery's ``@app.task`` does
        (``@service.task`` or ``@service.task(...)``; then ``fn.delay(...)``). Its
        arguments come as Celery passes them (a chain hands the previous result first);
        parameters named like dependencies are injected as for handlers, whatever their
        position (``task``: the bound task, what ``bind=True`` gives in Celery)."""

        def decorate(fn: Callable[..., Any]) -> Any:
            params = list(inspect.signature(fn).parameters)
            deps = [p for p in params if self._provides(p)]
            own = [p for p in params if p not in deps]
            name = f"{self.name}.{fn.__name__}"
            self._routes[name] = self.topology.tasks_queue
            options = self._options(fn, retry, task_options)

            @self.celery.task(name=name, bind=True, shared=False, **options)
            def run(task: Any, *args: Any, **kwargs: Any) -> Any:
                call = {**dict(zip(own, args, strict=False)), **kwargs}
                return self._call(task, name, fn, deps, call)

            return run

        return decorate if fn is None else decorate(fn)

    @property
    def handled_events(self) -> set[str]:
        """The event types this service has handlers for."""
        return set(self._handlers)

    def _options(
        self, fn: Callable[..., Any], retry: RetryPolicy | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        owner = f"{self.name}.{fn.__name__}"
        policy = retry or RetryPolicy()
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"{owner}: retry must be a RetryPolicy, not {policy!r}")
        options = checked_task_options(owner, options)
        if "on_failure" in options:
            options = {**options, "on_failure": final_only(options["on_failure"])}
        # Celery's options, and the policy itself for the startup check (``retry_policy``).
        return {**options, **policy.task_options(), "retry_policy": policy}

    def _entry_task(self, event_cls: type[Event]) -> Any:
        """The task named after the event type: validates the event under the contract of
        the version it carries, then hands each handler the event in the version that
        handler was written for (``shared.contracts.evolution``), or dead-letters the whole event
        (``unsupported-version``) before running anything. Each handler runs as its own
        task, inside this one (``shared.worker.inline``) unless its options need a message.
        Killed by its hard time limit, it is settled per handler (``settle_killed``), from the same
        plan."""
        event_type = event_cls.model_fields["type"].default
        self._routes[event_type] = self.topology.events_queue

        def plan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Step]:
            """Each handler with its task id and its version of the event, in order."""
            try:
                wire = contract_of(event_type, kwargs.get("event"))
                event = validate(wire or event_cls, "event", args, kwargs)
                shaped = [(t, read_as(event, c)) for t, c in self._handlers[event_type]]
            except UnsupportedVersion as exc:
                raise Reject(exc, requeue=False) from None
            # handlers reading the same version share one dump of it
            versions = {id(m): m for _, m in shaped}
            dumped = {k: Validated(m) for k, m in versions.items()}
            return [
                Step(t, {"event": dumped[id(m)]}, handler_task_id(event.id, t.name))
                for t, m in shaped
            ]  # fmt: skip

        @self.celery.task(name=event_type, bind=True, ignore_result=True, shared=False)
        def dispatch(task: Any, *args: Any, **kwargs: Any) -> None:
            for step in plan(args, kwargs):
                if can_inline(step.handler):
                    run_inline(task, step)
                else:
                    note(task.request.id, step.task_id)
                    step.handler.apply_async(kwargs=step.kwargs, task_id=step.task_id)

        def after_hard_limit(request: Any, record: Any, exc: BaseException) -> None:
            settle_killed(request, plan(request.args, request.kwargs), record, exc)

        dispatch.settle_killed = after_hard_limit  # type: ignore[attr-defined]  # read by the request
        # what the test kit runs an event by (``shared.service.testing``)
        dispatch.plan = plan  # type: ignore[attr-defined]
        return dispatch

    def _task(
        self,
        handler: Callable[..., Any],
        contract: type[BaseModel],
        key: str | None,
        queue: str,
        task_options: dict[str, Any],
    ) -> Any:
        name = getattr(contract, "task", None) if key is None else None
        name = name or f"{self.name}.{handler.__name__}"
        self._routes[name] = queue
        deps = list(inspect.signature(handler).parameters)[1:]
        self.handlers[name] = Handler(handler, contract, key, deps)

        @self.celery.task(name=name, bind=True, shared=False, **task_options)
        def run(task: Any, *args: Any, **kwargs: Any) -> Any:
            message = validate(contract, key, args, kwargs)
            return self._call(task, name, lambda **deps: handler(message, **deps), deps, {})

        return run

    def _call(
        self, task: Any, name: str, fn: Callable[..., Any], deps: list[str], call: dict[str, Any]
    ) -> Any:
        """Run ``fn`` with its dependencies; a database outage retries the task."""
        try:
            with ExitStack() as stack:
                return fn(**call, **{d: self._resolve(d, task, stack) for d in deps})
        except DATABASE_UNAVAILABLE as exc:
            logger.warning("%s[%s]: database unavailable, retrying: %s", name, task.request.id, exc)
            raise task.retry_after_outage(exc, DATABASE_RETRY_DELAY) from None

    def _provides(self, name: str) -> bool:
        return name in BUILT_IN or name in self._factories

    @contextmanager
    def replaced(self, **deps: Any) -> Iterator[None]:
        """Resolve ``deps`` as given while inside (a test's fakes; ``shared.service.testing``)."""
        saved, self._replaced = self._replaced, {**self._replaced, **deps}
        try:
            yield
        finally:
            self._replaced = saved

    def _resolve(self, name: str, task: Any, stack: ExitStack) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        if name == "task":
            return task
        if name == "db":
            return self.db
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
