"""Results written behind the ack survive a database outage in which pool processes exit.

The worker reaches PostgreSQL through a loopback proxy the test cuts (the shared server
stays up). ``--max-tasks-per-child=1`` makes every pool process exit after its task, as
``max_tasks_per_child``, an autoscale shrink or a restart do: the rows of the tasks it
ran, already acked, must reach the database once it is back, and no task may run twice.
"""

import re
import time
import uuid
from collections import Counter
from contextlib import suppress

from sqlalchemy import text

from infra.tcp_proxy import TcpProxy
from tests.support import send_raw, wait_for

COUNT = 12
OUTAGE = 15  # seconds: longer than a pool process's flush at exit, and its retries


def stored(db, ids: list[str]) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute(text(
            "SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:ids)"
        ), {"ids": ids}).all())  # fmt: skip


def runs(log: str) -> Counter:
    """How many times each reports.add task id started, from the worker's own log."""
    return Counter(re.findall(r"Task reports\.add\[([0-9a-f-]{36})\] received", log))


def test_pool_processes_exiting_during_a_database_outage_lose_no_row_and_run_no_task_twice(
    clean_queues, db
):
    stack = clean_queues
    proxy = TcpProxy.to(stack.database_url).start()
    worker = stack.worker(
        "reports", "--concurrency=2", "--max-tasks-per-child=1",
        DATABASE_URL=proxy.url(stack.database_url),
    ).start()  # fmt: skip
    ids = [str(uuid.uuid4()) for _ in range(COUNT)]
    try:
        proxy.cut()
        for n, task_id in enumerate(ids):
            send_raw(stack.amqp_url, "reports.add", {"x": n, "y": 1}, task_id, None)
        time.sleep(OUTAGE)
        proxy.restore()
        with suppress(AssertionError):  # the assertions below say what is missing
            wait_for(lambda: len(stored(db, ids)) == COUNT, 90)
        assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        proxy.restore()
        worker.stop()
        proxy.stop()
    assert stored(db, ids) == dict.fromkeys(ids, "SUCCESS"), worker.log
    assert runs(worker.output()) == dict.fromkeys(ids, 1)


def test_once_the_writer_finds_the_database_away_a_success_is_stored_before_its_ack(
    clean_queues, db
):
    """The exact window: task A ends as the outage begins, so its row is left behind the
    ack; once the writer has found the database away, task B's row is written before its
    ack, and B waits. SIGKILL of the worker (an OOM kill, a hard time limit) then loses
    A's row (acked, held in memory) and not B's: B's message comes back and runs again."""
    stack = clean_queues
    proxy = TcpProxy.to(stack.database_url).start()
    first = stack.worker(
        "reports", "--concurrency=1", DATABASE_URL=proxy.url(stack.database_url)
    ).start()
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        proxy.cut()
        send_raw(stack.amqp_url, "reports.add", {"x": 1, "y": 1}, a, None)
        wait_for(lambda: "database away" in first.output(), 30)
        send_raw(stack.amqp_url, "reports.add", {"x": 2, "y": 2}, b, None)
        wait_for(lambda: runs(first.output())[b] == 1, 30)
        time.sleep(3)
        assert f"reports.add[{b}] succeeded" not in first.output()  # waiting to be stored
        first.kill()
        proxy.restore()
        second = stack.worker("reports", "--concurrency=1").start()
        try:
            wait_for(lambda: stored(db, [b]) == {b: "SUCCESS"}, 60)
        finally:
            second.stop()
    finally:
        proxy.restore()
        first.stop()
        proxy.stop()
    assert a not in stored(db, [a])
    assert (runs(first.output()), runs(second.output())) == ({a: 1, b: 1}, {b: 1})


def test_a_pool_process_killed_before_its_parent_reads_the_result_runs_the_task_again(
    clean_queues, db
):
    """Celery 5.7 acks a lost pool process's task only if it finds the SUCCESS row; a row
    still behind the ack is not there yet, so the message is requeued: the task runs a
    second time, and that run stores the row (at least once, never lost)."""
    stack = clean_queues
    task_id = str(uuid.uuid4())
    worker = stack.worker(
        "reports", "--concurrency=1", "-I", "tests.integration.dies_after_success",
        DIE_AFTER_SUCCESS=task_id,
    ).start()  # fmt: skip
    try:
        send_raw(stack.amqp_url, "reports.add", {"x": 3, "y": 4}, task_id, None)
        wait_for(lambda: stored(db, [task_id]) == {task_id: "SUCCESS"}, 60)
    finally:
        worker.stop()
    assert "WorkerLostError" in worker.output()
    assert runs(worker.output()) == {task_id: 2}
