"""Worker logs as one JSON object per line (``LOG_FORMAT=json``), for a log pipeline.

Each line names the service and, inside a task, the task's name and id, the id of the
event it handles and the message's correlation id (``shared.core.tracing``), and the trace id
while a span is active (tracing on): "what happened to this request?" is one query by
either id. Only ids: message texts stay as the code wrote them, which keeps personal data
out at INFO.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery._state import get_current_task
from celery.signals import after_setup_logger, after_setup_task_logger

from shared.core.tracing import CORRELATION, current_trace_id


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "service": self.service,
            "message": record.getMessage(),
            **task_context(record),
        }
        if trace_id := current_trace_id():
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def task_context(record: logging.LogRecord) -> dict[str, Any]:
    """The running task's name, id, correlation id and event id; or those a worker log call
    passed along (Celery's "received" line carries them as ``extra={"data": ...}``)."""
    task = get_current_task()
    correlation = None
    if task is not None and task.request.id is not None:
        name: str | None = task.name
        task_id, kwargs = task.request.id, task.request.kwargs or {}
        correlation = (task.request.headers or {}).get(CORRELATION)
    else:
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or "id" not in data:
            return {}
        name, task_id, kwargs = data.get("name"), data["id"], {}
    context = {"task": name, "task_id": task_id}
    if correlation:
        context["correlation_id"] = correlation
    event = kwargs.get("event") if isinstance(kwargs, dict) else None
    if isinstance(event, dict) and "id" in event:
        context["event_id"] = event["id"]
    return context


def use_json_logs(service: str) -> None:
    """Give every handler Celery sets up (worker and task loggers) the JSON formatter."""

    def install(logger: logging.Logger | None = None, **kw: Any) -> None:
        for handler in (logger or logging.getLogger()).handlers:
            handler.setFormatter(JsonFormatter(service))

    after_setup_logger.connect(install, weak=False)
    after_setup_task_logger.connect(install, weak=False)


#: Celery's loggers of the per-task INFO lines: "received"; "succeeded", "retry".
TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_task_lines() -> None:
    """Warnings and errors only from Celery's per-task loggers (``TASK_LOG_LINES=false``).
    Celery checks their level once per task type, when it builds the task's handler and
    tracer, so a line not logged costs nothing per task."""
    for name in TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def use_json_logs_outside_workers(service: str) -> None:
    """The same JSON lines from a process Celery does not set up (the API under uvicorn):
    the server's loggers (start-up, access log) and the application's, through the root."""
    formatter = JsonFormatter(service)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
        root.setLevel(logging.INFO)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
