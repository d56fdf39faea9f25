"""Results in PostgreSQL: one upsert per state change, Celery's reading rules intact."""

import time
import uuid

from celery import states
from celery.result import AsyncResult

from tests.support import wait_for


def test_a_stored_success_is_never_overwritten_by_a_late_state(stack):
    from services.signup.app import service

    backend = service.celery.backend
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.STARTED)  # written ~20 ms later, in a batch
    wait_for(lambda: AsyncResult(task_id, app=service.celery).status == states.STARTED, 5, 0.01)
    backend.store_result(task_id, {"users": 3}, states.SUCCESS)
    backend.store_result(task_id, None, states.STARTED)  # a redelivered run starting again
    time.sleep(0.2)  # long enough for the late STARTED row to be written

    result = AsyncResult(task_id, app=service.celery)
    assert result.status == states.SUCCESS
    assert result.result == {"users": 3}


def test_a_failure_keeps_its_exception_and_traceback(stack):
    from services.signup.app import service

    backend = service.celery.backend
    task_id = str(uuid.uuid4())
    try:
        raise ValueError("the gateway said no")
    except ValueError as exc:
        backend.mark_as_failure(task_id, exc, traceback="Traceback: the gateway said no")

    result = AsyncResult(task_id, app=service.celery)
    assert result.status == states.FAILURE
    assert isinstance(result.result, ValueError) and "gateway said no" in str(result.result)
    assert "gateway said no" in result.traceback
    assert not result.successful() and result.ready()


def test_a_short_task_writes_only_its_final_state(stack):
    from services.signup.app import service

    backend = service.celery.backend
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.STARTED)
    backend.store_result(task_id, 42, states.SUCCESS)  # before the STARTED row went out
    time.sleep(0.2)
    assert AsyncResult(task_id, app=service.celery).result == 42
    assert AsyncResult(task_id, app=service.celery).status == states.SUCCESS
