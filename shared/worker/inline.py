"""Running an event's handlers inside its entry task, each as its own task would run.

The entry task used to publish one task per handler (a message, a confirm, a consume and
an ack each): most of an event's cost. Now it runs each handler's first attempt itself,
through Celery's tracer under the handler task's own name and id (``<event id>/<task>``,
as before), so everything that made a handler its own task still holds:

- its result row (STARTED, SUCCESS, RETRY, FAILURE) under its own task id and name, its
  log lines and metrics;
- its retry policy: ``autoretry_for``, ``task.retry`` and ``retry_after_outage`` publish
  the handler's own retry to the service's queue, exactly as after a failed first attempt
  of its own message; later attempts are that message;
- its dead letter: a final failure runs its ``on_failure`` and puts in the DLQ the message
  the handler's task would have had (``x-task`` the handler, ``x-original-queue``
  ``svc.tasks``), so a replay runs that handler alone;
- a failure only the broker can settle (the broker itself away, the result not stored, a
  ``Reject(requeue=True)``) fails the entry task, which requeues or retries the whole
  event: handlers are idempotent.

What cannot be inlined keeps its own message: a handler with ``rate_limit`` or ``expires``
(the broker and the worker enforce those per message). Time limits are per message too:
the entry task's are the sum of its handlers' (``share_time_limits``), so a hung send is
still interrupted and retried, and handlers that each keep within their own limits
never meet the shared one. A hard time limit kills the whole entry task; the worker then
settles each handler by what the killed process had noted (``shared.worker.progress``,
``settle_killed``): the one running is dead-lettered as its own message (``time-limit``)
and its ``on_failure`` runs, the ones not yet run get their own message.
"""

from dataclasses import dataclass
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import states
from celery.app.task import Context
from celery.app.trace import trace_task
from celery.exceptions import BackendStoreError
from kombu.serialization import dumps

from shared.core.tracing import ids_for
from shared.worker import progress
from shared.worker.allowed import broker_user
from shared.worker.app import BROKER_AWAY
from shared.worker.deadletter import dead_letter, is_final, reason_for

#: Task options the worker enforces per message: a handler with one keeps its own message.
PER_MESSAGE = ("rate_limit", "expires")


def can_inline(task: Any) -> bool:
    """Whether ``task`` may run inside its event's entry task."""
    return not any(getattr(task, option, None) for option in PER_MESSAGE)


def share_time_limits(entry: Any, handlers: list[Any]) -> None:
    """Give ``entry`` the sum of its inline ``handlers``' soft and hard time limits (one
    time budget for all, as large as theirs together), at most the app's own limits
    (``TASK_TIME_LIMIT`` stays below the broker's ``consumer_timeout``). None if any
    handler has none."""
    conf = entry.app.conf
    for limit, ceiling in (("soft_time_limit", conf.task_soft_time_limit),
                           ("time_limit", conf.task_time_limit)):  # fmt: skip
        values = [getattr(handler, limit) for handler in handlers]
        total = sum(values) if values and all(values) else None
        setattr(entry, limit, min(total, ceiling) if total and ceiling else total)


@dataclass(frozen=True)
class Step:
    """One handler of an event: its task, its version of the event, its task id."""

    handler: Any
    kwargs: dict[str, Any]
    task_id: str


def run_inline(entry: Any, step: Step) -> None:
    """Run ``step``'s handler's first attempt inside ``entry`` (the running entry task)."""
    handler, kwargs, task_id = step.handler, step.kwargs, step.task_id
    request = handler_request(entry.request, handler, task_id, kwargs)
    with progress.inline(entry.request.id, task_id):
        traced = trace_task(handler, task_id, (), kwargs, request, app=handler.app,
                            hostname=entry.request.hostname)  # fmt: skip
    info = traced.info
    if info is None or info.state in (states.RETRY, states.IGNORED):
        return  # done, or its retry is already published
    exc = info.retval
    if not is_final(exc) or isinstance(exc, (*BROKER_AWAY, BackendStoreError)):
        raise exc  # settled by the entry task's own message (requeued, retried)
    traceback = getattr(traced.retval, "traceback", None) if info.state == states.FAILURE else None
    dead_letter(entry.app, HandlerMessage.of(handler, task_id, kwargs, request),
                reason=reason_for(exc), exc=exc, traceback=traceback)  # fmt: skip


def settle_killed(entry: Any, steps: list[Step], record: Any, exc: BaseException) -> None:
    """The hard time limit killed ``entry`` (its worker's request) at ``record``
    (``shared.worker.progress``; None: before its first handler). Handlers before it are done; the
    one running is dead-lettered as its own message (``time-limit``) and its
    ``on_failure`` runs, unless its retry was already published; the ones not yet run
    (or not yet published) get their own message, as a first attempt, and run."""
    ids = [step.task_id for step in steps]
    at = ids.index(record.task) if record is not None and record.task in ids else -1
    for position, step in enumerate(steps):
        if position < at or (position == at and record.state == progress.RETRIED):
            continue
        if position == at and can_inline(step.handler):
            _killed(entry, step, exc)
        else:
            step.handler.apply_async(kwargs=step.kwargs, task_id=step.task_id)


def _killed(entry: Any, step: Step, exc: BaseException) -> None:
    """What the handler's own message would have met: its dead letter, then its FAILURE
    row and ``on_failure`` (a service's final-failure report), as Celery's
    ``on_timeout`` does for a task killed alone."""
    handler, kwargs, task_id = step.handler, step.kwargs, step.task_id
    request = handler_request(entry, handler, task_id, kwargs)
    dead_letter(entry.app, HandlerMessage.of(handler, task_id, kwargs, request),
                reason="time-limit", exc=exc)  # fmt: skip
    handler.backend.mark_as_failure(task_id, exc, request=Context(request))
    try:
        raise exc
    except type(exc):
        handler.on_failure(exc, task_id, (), kwargs, ExceptionInfo())


def handler_request(
    parent: Any, handler: Any, task_id: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The request of the handler's first attempt, as a worker would build it from the
    message the entry task used to publish."""
    topo = handler.app.conf.service_topology
    delivery = parent.delivery_info or {}
    ids = ids_for(task_id)  # as the entry task's publish of it would have stamped them
    return {
        **ids,
        "id": task_id,
        "task": handler.name,
        "retries": 0,
        "is_eager": False,
        "hostname": parent.hostname,
        "root_id": parent.root_id or parent.id,
        "parent_id": parent.id,
        "correlation_id": task_id,
        "headers": ids,
        "kwargs": kwargs,
        "delivery_info": {
            "exchange": topo.name,
            "routing_key": topo.tasks_queue,
            "priority": delivery.get("priority"),
            "redelivered": delivery.get("redelivered"),
        },
    }


class HandlerMessage:
    """The message a handler's task would have been, for its dead letter."""

    def __init__(
        self,
        headers: dict[str, Any],
        properties: dict[str, Any],
        body: bytes,
        delivery: dict[str, Any],
    ) -> None:
        self.headers, self.properties, self.delivery_info = headers, properties, delivery
        self.body = self.wire_body = body
        self.content_type, self.content_encoding = "application/json", "utf-8"

    @classmethod
    def of(
        cls, handler: Any, task_id: str, kwargs: dict[str, Any], request: dict[str, Any]
    ) -> "HandlerMessage":
        message = handler.app.amqp.as_task_v2(
            task_id, handler.name, kwargs=kwargs,
            root_id=request["root_id"], parent_id=request["parent_id"],
        )  # fmt: skip
        _, _, payload = dumps(message.body, serializer="json")
        body = payload.encode() if isinstance(payload, str) else payload
        headers = {**message.headers, **request["headers"]}
        # Published, had it been, by the entry task: the service itself (its replay runs).
        properties = {**message.properties, "user_id": broker_user(handler.app.conf.broker_url)}
        return cls(headers, properties, body, dict(request["delivery_info"]))
