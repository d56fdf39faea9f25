"""A result row PostgreSQL refuses (a task id too long for its column; before its escaping, a
NUL character in the traceback) is not an outage: the task is dead-lettered once with its
reason, runs once, and the worker goes on. Retried as a database error and then as an
outage, it ran again and again for the hour of ``OUTAGE_BUDGET`` instead."""

import uuid

from sqlalchemy import text

from tests.support import send_command, wait_for


def states(db, *task_ids: str) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:t)"),
            {"t": list(task_ids)},
        )
        return dict(rows.all())


def collect(stack, count: int) -> list:
    """The reports service's dead letters, once there are ``count`` (drained as they come)."""
    letters: list = []
    wait_for(lambda: letters.extend(stack.dead_letters("reports")) or len(letters) >= count, 60)
    return letters


def test_a_failure_whose_row_postgresql_refuses_is_dead_lettered_once_and_runs_once(
    clean_queues, db
):
    stack = clean_queues
    worker = stack.worker("reports", "-I", "tests.integration.nul_tasks")
    worker.start()
    try:
        # A NUL in the exception (so in the traceback column), and a task id longer than
        # its column (155) on a task that fails: two rows PostgreSQL refuses.
        nul = send_command(stack, "reports.fail_with_nul", text=uuid.uuid4().hex)
        long = send_command(stack, "reports.add", "long-" + "x" * 200, x="a", y=1)
        letters = collect(stack, 2)
        # The worker goes on: a task sent after the refused rows runs.
        after = send_command(stack, "reports.add", x=2, y=3)
        wait_for(lambda: states(db, after).get(after) == "SUCCESS", timeout=60)
    finally:
        worker.stop()
    by_id = {m.headers["id"]: m.headers for m in letters}
    assert sorted(by_id) == sorted([nul, long]) and len(letters) == 2, "each dead-lettered once"
    assert by_id[nul]["x-dead-letter-reason"] == "task-failed"
    assert by_id[nul]["x-exception-type"] == "ValueError"
    assert "refused\x00" in by_id[nul]["x-exception-message"]
    assert by_id[long]["x-exception-type"] == "TypeError"
    assert stack.dead_letters("reports") == []
    for task_id in (nul, long):
        assert worker.output().count(f"[{task_id}] received") == 1, "ran once"
    assert "database away" not in worker.output(), "retried as an outage"
    assert "refused by the database" in worker.output()  # the id too long for its column
    # A NUL in the traceback is escaped: the caller reads the failure, not PENDING for good.
    assert states(db, nul) == {nul: "FAILURE"}


def test_a_result_with_a_nul_character_is_stored(clean_queues, db):
    stack = clean_queues
    worker = stack.worker("reports", "-I", "tests.integration.nul_tasks")
    worker.start()
    try:
        task_id = send_command(stack, "reports.return_nul", text="x")
        wait_for(lambda: states(db, task_id).get(task_id) == "SUCCESS", timeout=60)
    finally:
        worker.stop()
    assert stack.dead_letters("reports") == []
