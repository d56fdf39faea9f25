"""The source document's tasks, written as it writes them: each decorated function IS the
task (``add.delay(2, 3)``), on the platform's task class, routes and retry policies.

    add.delay(2, 3)                                           -> 5
    chain(step1.s(2), step2.s(), step3.s())()                 -> ((2 + 1) * 2) - 3 = 3
    chord([add.s(i, i) for i in range(5)], sum_results.s())() -> 20

The document's ``@app.task(bind=True)`` reads ``self.request``; here a parameter named
``task`` is the bound task. Its ``max_retries=...``, ``autoretry_for=...`` go in one
``RetryPolicy`` (checked when this module is imported, not ignored when misspelt).
"""

from typing import Any

from services.reports.service import service
from shared import RetryPolicy


@service.task
def add(x: int, y: int) -> int:
    return x + y


@service.task
def multiply(x: int, y: int) -> int:
    return x * y


@service.task
def step1(x: int) -> int:
    return x + 1


@service.task
def step2(x: int) -> int:
    return x * 2


@service.task
def step3(x: int) -> int:
    return x - 3


@service.task
def sum_results(results: list[int]) -> int:
    return sum(results)


@service.task
def process_data(data: str, task) -> dict[str, Any]:
    """The document's bound task: what a task knows about its own run."""
    request = task.request
    return {"id": request.id, "retries": request.retries, "args": request.args,
            "kwargs": request.kwargs, "name": task.name, "data": data}  # fmt: skip


@service.task(retry=RetryPolicy(autoretry_for=(ConnectionError,), retry_backoff=1, max_retries=5))
def call_api(failures: int, task) -> int:
    """Fails ``failures`` times with ConnectionError (an API away), then answers: retried
    automatically with exponential backoff (1, 2, 4, ... s) and jitter."""
    if task.request.retries < failures:
        raise ConnectionError(f"API unreachable (attempt {task.request.retries + 1})")
    return task.request.retries


@service.task(retry=RetryPolicy(max_retries=3, default_retry_delay=60))
def send_email(failures: int, task) -> int:
    """The document's manual retry: ``raise task.retry(exc=..., countdown=60)``."""
    try:
        if task.request.retries < failures:
            raise TimeoutError("SMTP server did not answer")
    except TimeoutError as exc:
        raise task.retry(exc=exc, countdown=60) from exc
    return task.request.retries
