"""One request followed across services: message ids always, OpenTelemetry traces on request.

Every message a service publishes carries two headers (``before_task_publish``, so every
path: events, commands, a handler's dispatch, retries, the outbox relay):

- ``x-correlation-id``: the id of the first event (or command) of the story, carried
  unchanged through everything it causes;
- ``x-causation-id``: the id of the task (an entry task's id is its event's) whose run
  published this message. A retry is the same message again and keeps its cause; a
  message published outside any task (the API, the outbox relay) has none.

Traces are set up only when the standard OpenTelemetry variables ask for them:
``OTEL_TRACES_EXPORTER`` (``otlp``: OTLP over HTTP/protobuf, the exporter shipped;
``console``; any exporter installed under that entry point) or an
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, unless ``OTEL_SDK_DISABLED=true``. The service
name is ``OTEL_SERVICE_NAME``, else the service's own; endpoints, headers, batching and
sampling are the SDK's own ``OTEL_*`` variables. Without them nothing is imported or
installed. With them the W3C ``traceparent`` rides on each message, so the HTTP request,
the outbox row (its ``headers`` column), the relay's publish, each entry task and handler
task and the events they publish are one trace. Its spans: the FastAPI instrumentation's
request; the Celery instrumentation's ``run/<task>`` (task id, event id, correlation and
causation ids as attributes; a ``retry`` event); this module's ``apply_async/<task>`` for
each publish and ``dead_letter/<task>`` (a ``dead-lettered`` event) for each dead letter.

Not used: the Celery instrumentation's own publish spans (for a task the publishing
process does not register, so every event sent with ``send_task``, they are never ended
and stay the current span of that thread), and the SQLAlchemy instrumentation (0.66b2
supports SQLAlchemy < 2.1 only; forced, it imports ``sqlalchemy.ext.asyncio``, which needs
greenlet): a task's span includes its queries.
"""

import threading
from importlib.metadata import entry_points
from typing import Any

from celery._state import get_current_task
from celery.signals import (
    after_task_publish,
    before_task_publish,
    task_prerun,
    task_retry,
    worker_process_shutdown,
    worker_shutdown,
)

from shared.core.settings import get_settings

CORRELATION = "x-correlation-id"
CAUSATION = "x-causation-id"
#: The W3C trace context headers, as kept in an outbox row and on a message.
TRACE_HEADERS = ("traceparent", "tracestate")


_lock = threading.Lock()
_tracer: Any = None  # the tracer of this module, once tracing is set up
_publishing = threading.local()  # the publish span between before/after_task_publish


def install(service: str) -> None:
    """Stamp ids on every publish; set up tracing if the environment asks. Once a process."""
    global _tracer
    before_task_publish.connect(_stamp_ids, weak=False, dispatch_uid="eventful-ids")
    with _lock:
        if _tracer is not None:
            return
        settings = get_settings().tracing
        exporters = settings.exporters()
        if exporters:
            _tracer = _configure(settings.otel_service_name or service, exporters)


def ids_for(message_id: Any) -> dict[str, str]:
    """The correlation and causation ids a message with this id carries when published now
    (from the running task, if any): what ``before_task_publish`` stamps on it."""
    headers = {"id": str(message_id)}
    _stamp_ids(headers=headers)
    del headers["id"]
    return headers


def outbox_headers(event_id: Any) -> dict[str, str]:
    """The headers an event recorded now is to be published with (the outbox keeps them
    until the relay publishes it): its ids, and the current trace context if any."""
    headers = ids_for(event_id)
    if _tracer is not None:
        from opentelemetry.propagate import inject

        inject(headers)
    return headers


def _stamp_ids(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: the message's correlation and causation ids."""
    if headers is None:
        return
    task = get_current_task()
    request = task.request if task is not None else None
    if request is None or request.id is None:
        headers.setdefault(CORRELATION, headers.get("id"))
        return
    own = request.headers or {}
    headers.setdefault(CORRELATION, own.get(CORRELATION) or request.id)
    if headers.get("id") != request.id:
        headers.setdefault(CAUSATION, request.id)
    elif own.get(CAUSATION):  # a retry: the same message, the same cause
        headers.setdefault(CAUSATION, own[CAUSATION])


def _configure(service: str, exporters: list[str]) -> Any:
    """A tracer provider exporting to ``exporters``, and the instrumentations."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for name in exporters:
        (exporter,) = entry_points(group="opentelemetry_traces_exporter", name=name) or (None,)
        if exporter is None:
            raise RuntimeError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed")
        provider.add_span_processor(BatchSpanProcessor(exporter.load()()))
    trace.set_tracer_provider(provider)
    celery = CeleryInstrumentor()
    celery.instrument(tracer_provider=provider)
    # Its publish spans leak for ``send_task`` (module docstring): ours replace them.
    before_task_publish.disconnect(celery._trace_before_publish)
    after_task_publish.disconnect(celery._trace_after_publish)
    before_task_publish.connect(_start_publish, weak=False)
    after_task_publish.connect(_end_publish, weak=False)
    task_prerun.connect(_describe_run, weak=False)
    task_retry.connect(_record_retry, weak=False)
    worker_process_shutdown.connect(lambda **_: provider.force_flush(), weak=False)
    worker_shutdown.connect(lambda **_: provider.force_flush(), weak=False)
    return trace.get_tracer(__name__)


def _start_publish(sender: Any = None, headers: dict[str, Any] | None = None, **kw: Any) -> None:
    """``apply_async/<task>``: a child of the current span, else of the trace context the
    message already carries (an outbox row's); its context goes on the message."""
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject
    from opentelemetry.trace import SpanKind

    if headers is None:
        return
    _end_publish()  # one whose publish raised (no after_task_publish)
    parent = None
    if not trace.get_current_span().get_span_context().is_valid:
        parent = extract({k: headers[k] for k in TRACE_HEADERS if k in headers})
    span = _tracer.start_span(
        f"apply_async/{sender}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_ids(headers.get("id"), headers),
    )
    if kw.get("routing_key"):
        span.set_attribute("messaging.destination.name", str(kw["routing_key"]))
    inject(headers, context=trace.set_span_in_context(span))
    _publishing.span = span


def _end_publish(**_: Any) -> None:
    span = getattr(_publishing, "span", None)
    if span is not None:
        _publishing.span = None
        span.end()


def _ids(task_id: Any, headers: dict[str, Any], event: Any = None) -> dict[str, str]:
    attributes = {
        "eventful.task_id": task_id,
        "eventful.correlation_id": headers.get(CORRELATION),
        "eventful.causation_id": headers.get(CAUSATION),
        "eventful.event_id": event.get("id") if isinstance(event, dict) else None,
    }
    return {k: str(v) for k, v in attributes.items() if v is not None}


def _describe_run(task: Any = None, task_id: Any = None, kwargs: Any = None, **_: Any) -> None:
    """``task_prerun`` (after the Celery instrumentation's): ids on the ``run/<task>`` span."""
    from opentelemetry import trace

    event = kwargs.get("event") if isinstance(kwargs, dict) else None
    headers = (task.request.headers if task is not None else None) or {}
    trace.get_current_span().set_attributes(_ids(task_id, headers, event))


def _record_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    """``task_retry``, in the run that failed: a ``retry`` event on its span."""
    from opentelemetry import trace

    exc = getattr(reason, "exc", None) or reason
    attributes: dict[str, str | int] = {
        "exception.type": type(exc).__name__,
        "exception.message": str(exc)[:500],
        "retry.attempt": int(getattr(request, "retries", 0) or 0) + 1,
    }
    if getattr(reason, "when", None) is not None:
        attributes["retry.countdown"] = str(reason.when)
    trace.get_current_span().add_event("retry", attributes)


def record_dead_letter(headers: dict[str, Any], reason: str, queue: str) -> None:
    """A ``dead_letter/<task>`` span, in the trace of the message, with a ``dead-lettered``
    event: the worker's main process publishes the copy, after the run's span ended."""
    if _tracer is None:
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    parent = extract({k: headers[k] for k in TRACE_HEADERS if isinstance(headers.get(k), str)})
    task = headers.get("x-task") or headers.get("task") or "unknown"
    with _tracer.start_as_current_span(
        f"dead_letter/{task}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_ids(headers.get("id"), headers),
    ) as span:
        span.add_event(
            "dead-lettered",
            {
                "reason": reason,
                "queue": queue,
                "exception.type": str(headers.get("x-exception-type") or ""),
                "exception.message": str(headers.get("x-exception-message") or "")[:500],
            },
        )


def instrument_app(app: Any) -> None:
    """Server spans for a FastAPI app (where a trace starts), if tracing is on."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])


def current_trace_id() -> str | None:
    """The active span's trace id (32 hex digits), for log lines; None without one."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
