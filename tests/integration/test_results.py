"""Results in PostgreSQL: one upsert per state change, Celery's reading rules intact."""

import time
import uuid

from celery import states
from celery.app.task import Context
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


def started_rows_written(backend) -> None:
    """Wait until this process's buffered STARTED rows have gone to the database."""
    rows = backend._started_rows()
    wait_for(lambda: not rows.pending and not rows.lock.locked(), 5, 0.005)
    with rows.lock:
        pass


def test_a_failure_is_never_overwritten_by_a_started_row_that_lands_after_it(stack):
    """The prefork race: the worker's parent writes FAILURE for a rejected task while the
    pool child still holds the task's STARTED row in its buffer; the child writes it later."""
    from services.signup.app import service

    backend = service.celery.backend
    for final in (states.FAILURE, states.REVOKED):
        task_id = str(uuid.uuid4())
        backend.store_result(task_id, ValueError("rejected"), final)  # the parent
        backend.store_result(task_id, None, states.STARTED)  # the child's late flush
        started_rows_written(backend)
        backend.store_result(task_id, None, states.RETRY)

        assert AsyncResult(task_id, app=service.celery).status == final


def test_a_retried_task_goes_started_retry_started_and_to_its_final_state(stack):
    from services.signup.app import service

    backend = service.celery.backend
    task_id = str(uuid.uuid4())
    seen = []
    for attempt, state in enumerate((states.STARTED, states.RETRY, states.STARTED)):
        request = Context(id=task_id, retries=attempt // 2, task="signup.user_stats")
        backend.store_result(task_id, None, state, request=request)
        started_rows_written(backend)
        seen.append(AsyncResult(task_id, app=service.celery).status)
    backend.store_result(task_id, 7, states.SUCCESS)

    assert seen == [states.STARTED, states.RETRY, states.STARTED]
    assert AsyncResult(task_id, app=service.celery).result == 7


def test_a_late_state_of_an_earlier_attempt_does_not_replace_a_later_attempts(stack):
    """Attempt 0's RETRY row delayed past attempt 1's STARTED would show RETRY while
    attempt 1 runs."""
    from services.signup.app import service

    backend = service.celery.backend
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.STARTED, request=Context(id=task_id, retries=1))
    started_rows_written(backend)
    backend.store_result(task_id, None, states.RETRY, request=Context(id=task_id, retries=0))

    assert AsyncResult(task_id, app=service.celery).status == states.STARTED


def test_a_task_replayed_from_the_dlq_can_still_succeed_over_its_failure(stack):
    from services.signup.app import service

    backend = service.celery.backend
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, ValueError("smtp down"), states.FAILURE)
    backend.store_result(task_id, {"sent": True}, states.SUCCESS)

    assert AsyncResult(task_id, app=service.celery).result == {"sent": True}
