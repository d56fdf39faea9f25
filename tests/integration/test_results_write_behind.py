"""A success no workflow reads is written after the ack, by the pool process's buffer:
none may be lost when the worker is stopped (SIGTERM to its main process, as
``docker stop`` and systemd do) right after its last ack, and a row the database refuses
holds back no other."""

import signal
import uuid

from sqlalchemy import text

from bench.measure import ready_messages
from tests.integration.test_ops_metrics import sample, scrape
from tests.support import drain, free_port, send_raw, wait_for

COUNT = 300


def test_every_success_is_stored_when_the_worker_stops_right_after_its_last_ack(clean_queues, db):
    stack = clean_queues
    ids = [str(uuid.uuid4()) for _ in range(COUNT)]
    for n, task_id in enumerate(ids):
        send_raw(stack.amqp_url, "reports.add", {"x": n, "y": 1}, task_id, None)
    # Rows wait far longer than the test: only the flush at exit can write them.
    worker = stack.worker("reports", RESULT_WRITE_DELAY="600").start()
    try:
        wait_for(lambda: ready_messages(stack.amqp_url, "reports.tasks") == 0, 120, 0.005)
        # Warm shutdown (main process only): the prefetched tasks finish and are acked,
        # then the pool processes exit holding the last rows, which they must write.
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)
    finally:
        worker.stop()
    # Prefetched tasks the pool had not started go back to the queue; every other one ran
    # and was acked, so its row must be there.
    requeued = {m.headers["id"] for m in drain(stack.amqp_url, "reports.tasks")}
    ran = [i for i in ids if i not in requeued]
    assert len(ran) > COUNT - 20
    with db.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:ids)"
        ), {"ids": ran}).all())  # fmt: skip
    assert [rows.get(i) for i in ran] == ["SUCCESS"] * len(ran)


def stored(db, ids: list[str]) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute(text(
            "SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:ids)"
        ), {"ids": ids}).all())  # fmt: skip


def refused_count(port: int) -> float | None:
    return sample(scrape(port), "eventful_result_rows_refused_total", service="reports")


def test_a_row_the_database_refuses_is_counted_and_holds_back_no_other(clean_queues, db, tmp_path):
    stack, port = clean_queues, free_port()
    # A task id longer than the column (155), and one with a NUL PostgreSQL cannot store.
    refused = ["long-" + "x" * 200, f"nul-\x00-{uuid.uuid4()}"]
    ids = [str(uuid.uuid4()) for _ in range(60)]
    for n, task_id in enumerate(ids):
        send_raw(stack.amqp_url, "reports.add", {"x": n, "y": 1}, task_id, None)
        if n in (10, 40):
            send_raw(stack.amqp_url, "reports.add", {"x": n, "y": 2}, refused[n // 40], None)
    worker = stack.worker("reports", "-I", "shared.ops.metrics", METRICS_PORT=str(port),
                          PROMETHEUS_MULTIPROC_DIR=str(tmp_path)).start()  # fmt: skip
    try:
        wait_for(lambda: len(stored(db, ids)) == len(ids), 60)
        # Counted by whichever pool process held the row, maybe after the others' last
        # write: wait for the count itself, not only for the rows around it.
        wait_for(lambda: refused_count(port) == 2, 30)
    finally:
        worker.stop()
    assert set(stored(db, ids).values()) == {"SUCCESS"}
    assert "refused" in worker.output()
