"""A success no workflow reads is written after the ack, by the pool process's buffer:
none may be lost when the worker is stopped (SIGTERM to its main process, as
``docker stop`` and systemd do) right after its last ack."""

import signal
import uuid

from sqlalchemy import text

from bench.measure import ready_messages
from tests.support import send_raw, wait_for

COUNT = 300


def test_every_success_is_stored_when_the_worker_stops_right_after_its_last_ack(clean_queues, db):
    stack = clean_queues
    ids = [str(uuid.uuid4()) for _ in range(COUNT)]
    for n, task_id in enumerate(ids):
        send_raw(stack.amqp_url, "reports.add", {"x": n, "y": 1}, task_id, None)
    worker = stack.worker("reports").start()
    try:
        wait_for(lambda: ready_messages(stack.amqp_url, "reports.tasks") == 0, 120, 0.005)
        # Warm shutdown (main process only): the prefetched tasks finish and are acked,
        # then the pool processes exit holding the last rows, which they must write.
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)
    finally:
        worker.stop()
    with db.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:ids)"
        ), {"ids": ids}).all())  # fmt: skip
    assert [rows.get(i) for i in ids] == ["SUCCESS"] * COUNT
