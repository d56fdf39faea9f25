"""A test kit for services built on the platform: run a handler in process, no broker.

    harness = Harness(service, mailer=FakeMailer())
    harness.handle("mail.send_welcome_email", event=event.model_dump(mode="json"))
    assert harness.published == [...]

``handle``/``handle_event`` run a handler on its message's arguments: the same contract
validation as in a worker (an invalid one raises ``InvalidMessage``), its dependencies by
name from the fakes given; ``publish`` and ``send`` are recorded.

``receive`` takes a message as it arrives (``arriving``: a protocol-2 message, its
``user_id`` and the exchange and routing key it came by, or any bytes a publisher might
send) and runs it through the worker's own receive path (``shared.worker.receive.STEPS``),
its task (an event's entry task hands each handler its version of the event), the retry
policy (Celery's own ``autoretry_for``/``task.retry``) and the worker's dead-letter
decision (``is_final``, ``reason_for``), with the same functions the worker calls. What
would be published (a retry, a handler's own message) is captured instead. Each task run
gets an ``Outcome``: handled, retried (with its countdown, and the retry as it would
arrive: ``receive`` it again), or dead-lettered (with the ``x-dead-letter-reason`` the
worker would set). Not shown here: what only the broker and the database do (confirms,
redelivery, result rows, time limits, the dead letter's copy), a task's ``on_failure``
hook, and a handler with ``rate_limit``/``expires`` runs here at once where a worker gives
it its own message; those belong in tests on the real servers (``tests/support.py``).
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery.app.task import Context
from celery.exceptions import Reject, Retry
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from shared.contracts.evolution import read_as
from shared.contracts.models import Event
from shared.service.declaration import Service
from shared.service.handler import InvalidMessage
from shared.worker.allowed import broker_user
from shared.worker.app import BROKER_AWAY
from shared.worker.deadletter import is_final, reason_for
from shared.worker.inline import handler_request
from shared.worker.receive import UNKNOWN_TASK, Receiving, receive, refusal
from shared.worker.request import EXPIRED, DeadLetteringRequest

#: What of a task's publish options its message carries here (``as_task_v2``'s names).
TASK_MESSAGE_OPTIONS = ("retries", "countdown", "eta", "root_id", "parent_id", "expires")


@dataclass
class Outcome:
    """What the worker would do with one task run: ``handled`` (its ``result``), ``retried``
    (``countdown`` seconds; ``retry``, the message it would publish), ``dead-lettered``
    (``reason``), or ``requeued`` (a failure only the broker settles)."""

    task: str
    kind: str
    result: Any = None
    reason: str | None = None
    countdown: float | None = None
    retry: Message | None = None
    exc: BaseException | None = field(default=None, repr=False)


class Harness:
    def __init__(self, service: Service, **fakes: Any) -> None:
        self.service = service
        self.published: list[Any] = []
        self.sent: list[Any] = []
        self.fakes = {"publish": self.published.append, "send": self.sent.append, **fakes}

    def handle(self, task_name: str, **kwargs: Any) -> Any:
        """Run the handler of ``task_name`` on a message in its wire form (``kwargs``)."""
        handler = self.service.handlers[task_name]
        try:
            message = handler.parse(kwargs)
        except Reject as rejected:
            reason = rejected.reason  # type: ignore[attr-defined]  # not in celery-types
            raise InvalidMessage(str(reason)) from None
        missing = [d for d in handler.deps if d not in self.fakes]
        if missing:
            raise LookupError(f"{task_name} needs {', '.join(missing)}: pass them as fakes")
        return handler.fn(message, **{d: self.fakes[d] for d in handler.deps})

    def handle_event(self, event: Any) -> dict[str, Any]:
        """Run every handler of ``event``'s type, as its entry task would dispatch it: in
        the version each handler was written for (``shared.contracts.evolution``)."""
        return {
            name: self.handle(name, event=read_as(event, handler.contract).model_dump(mode="json"))
            for name, handler in self.service.handlers.items()
            if handler.key == "event"
            and issubclass(handler.contract, Event)
            and handler.contract.model_fields["type"].default == event.type
        }

    # -- the receive path ------------------------------------------------------------------

    def arriving(
        self,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        exchange: str,
        routing_key: str,
        user_id: str | None = None,
        content_type: str | None = "application/json",
        content_encoding: str | None = "utf-8",
        **properties: Any,
    ) -> Message:
        """A message as the worker's consumer gets it: the body's bytes, its headers and
        properties (``user_id``, which the broker validated), and the route it came by."""
        if user_id is not None:
            properties["user_id"] = user_id
        # kombu's stubs want str; a consumer's body and delivery tag are bytes and int
        return Message(
            body, delivery_tag=1, content_type=content_type, content_encoding=content_encoding,  # type: ignore[arg-type]
            delivery_info={"exchange": exchange, "routing_key": routing_key},
            properties={**properties, "content_type": content_type,
                        "content_encoding": content_encoding},
            headers=headers, accept=prepare_accept_content(self.service.celery.conf.accept_content),
        )  # fmt: skip

    def event(self, event: Any, **headers: Any) -> Message:
        """``event`` as a service publishes it (``Service.publish``): protocol 2 on
        ``events``, routed by its type."""
        body = {"event": event.model_dump(mode="json")}
        return self._message(event.type, body, str(event.id), ("events", event.type), {}, headers)

    def receive(self, message: Message) -> dict[str, Outcome]:
        """Run ``message`` as the worker would; each task run's outcome, by task name."""
        app = self.service.celery
        try:
            with self._capturing():
                return self._receive(app, message)
        except _Refused as refused:
            task = str((message.headers or {}).get("task") or "")
            return {task: Outcome(task, "dead-lettered", reason=refused.reason, exc=refused.exc)}

    def _receive(self, app: Any, message: Message) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}

        def dispatch(message: Message) -> None:
            """As the worker's consumer: the message becomes a request (``DeadLetteringRequest``,
            which decodes it and decides expiry); an event's entry task plans its handlers,
            each run with the request it would get inline (``shared.worker.inline``)."""
            name = message.headers["task"]
            if name not in app.tasks:
                raise _Refused(UNKNOWN_TASK, LookupError(f"no task named {name!r}"))
            task = app.tasks[name]
            request = DeadLetteringRequest(message, app=app, task=task, hostname="harness")
            if request.maybe_expire():
                outcomes[name] = Outcome(
                    name, "dead-lettered", reason=EXPIRED, exc=request.expired()
                )
                return
            plan = getattr(task, "plan", None)
            if plan is None:
                outcomes[name] = self._run(task, request.request_dict, request.args, request.kwargs)
                return
            try:
                steps = plan(tuple(request.args), request.kwargs)
            except Reject as exc:
                outcomes[name] = Outcome(name, "dead-lettered", reason=reason_for(exc), exc=exc)
                return
            entry = Context(request.request_dict)
            for step in steps:
                inline = handler_request(entry, step.handler, step.task_id, step.kwargs)
                outcomes[step.handler.name] = self._run(step.handler, inline, (), step.kwargs)

        try:
            receive(Receiving.of(app), message, dispatch)
        except _Refused:
            raise
        except Exception as exc:
            raise _Refused(refusal(exc), exc) from exc
        return outcomes

    def _run(
        self, task: Any, request: dict[str, Any], args: Any, kwargs: dict[str, Any]
    ) -> Outcome:
        """Run ``task`` as the worker's pool would, and settle it as the worker would."""
        pool = {"is_eager": False, "called_directly": False, "hostname": "harness"}
        task.push_request(**{**pool, **request, "args": list(args), "kwargs": kwargs})
        try:
            with self.service.replaced(**self.fakes):
                result = task.run(*args, **kwargs)
        except Retry as retry:
            again = next(m for m in reversed(self._sent) if m.headers["id"] == request["id"])
            when = retry.when  # a Retry from task.retry carries its countdown in seconds
            countdown = float(when) if isinstance(when, int | float) else None
            return Outcome(task.name, "retried", countdown=countdown, retry=again, exc=retry.exc)
        except Exception as exc:
            if not is_final(exc) or isinstance(exc, BROKER_AWAY):  # as the worker's request
                return Outcome(task.name, "requeued", exc=exc)
            return Outcome(task.name, "dead-lettered", reason=reason_for(exc), exc=exc)
        finally:
            task.pop_request()
        return Outcome(task.name, "handled", result=result)

    @contextmanager
    def _capturing(self) -> Iterator[None]:
        """What the service's tasks publish (a retry) becomes a message to ``receive``
        (kept in ``_sent``),
        not a publish: Celery's ``send_task``, where every task message leaves."""
        app = self.service.celery
        self._sent: list[Message] = []

        def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
            topo = self.service.topology
            route = (topo.name, topo.tasks_queue)
            self._sent.append(self._message(name, kwargs or {}, options.pop("task_id"),
                                               route, options, args=args))  # fmt: skip

        app.send_task = send_task  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            del app.send_task

    def _message(
        self,
        name: str,
        kwargs: dict[str, Any],
        task_id: str,
        route: tuple[str, str],
        options: dict[str, Any],
        headers: dict[str, Any] | None = None,
        args: Any = None,
    ) -> Message:
        """Task ``name`` as the service's publisher writes it (Celery's ``as_task_v2``:
        ``options`` such as ``retries``, ``countdown``), sent by the service's own broker
        user, as the platform stamps every publish."""
        app = self.service.celery
        kept = {k: options[k] for k in TASK_MESSAGE_OPTIONS if options.get(k) is not None}
        sent = app.amqp.as_task_v2(task_id, name, args=args or (), kwargs=kwargs, **kept)
        exchange, routing_key = route
        return self.arriving(
            json.dumps(sent.body).encode(), {**sent.headers, **(headers or {})},
            exchange=exchange, routing_key=routing_key, user_id=broker_user(app.conf.broker_url),
        )  # fmt: skip


class _Refused(Exception):
    """A message the receive path (or Celery's handler) refused, with its reason."""

    def __init__(self, reason: str, exc: BaseException) -> None:
        super().__init__(reason)
        self.reason, self.exc = reason, exc
