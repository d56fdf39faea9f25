"""Stored times are UTC: in dead letters' headers (the platform's and Celery's own ``eta``
and ``expires``, whatever the app's ``timezone``, Asia/Seoul) and in result rows, whatever
the database session's time zone."""

import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from shared.worker.allowed import broker_user
from tests.support import JSON, publish_raw, wait_for

ROOT = Path(__file__).resolve().parents[2]
#: An ISO 8601 time with its offset, wherever it sits in a header's text.
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?([+-]\d\d:\d\d|Z)")


def client(stack, script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def offsets(headers: dict) -> dict[str, set[str]]:
    """Each header that holds a time, and the offsets its times carry."""
    found = {k: set(STAMP.findall(str(v))) for k, v in headers.items()}
    return {k: v for k, v in found.items() if v}


#: Two dead letters with times the platform wrote: an unknown task sent with a countdown
#: (Celery's ``eta``), a task whose retries (each with an ``eta`` the worker wrote) ran out.
SEND = """
from services.reports.app import app
from services.reports.examples import call_api
app.send_task("reports.no_such_task", countdown=1)
call_api.delay(9)  # fails 9 times; 5 retries allowed
"""
#: A sender's own ``expires``, in Seoul time and passed: the worker dead-letters it.
SEOUL_PAST = "2026-01-01T09:00:00+09:00"


def test_every_time_the_platform_writes_in_a_dead_letter_s_headers_is_utc(clean_queues):
    stack = clean_queues
    client(stack, SEND)
    publish_raw(stack.amqp_url, "reports", "reports.tasks", b"[[1, 1], {}, {}]", **JSON,
                application_headers={"task": "reports.add", "id": str(uuid.uuid4()),
                                     "expires": SEOUL_PAST},
                user_id=broker_user(stack.amqp_url))  # fmt: skip
    worker = stack.worker("reports").start()
    dead = []
    try:
        wait_for(lambda: dead.extend(stack.dead_letters("reports")) or len(dead) >= 3, 60)
    finally:
        worker.stop()
    by_reason = {m.headers["x-dead-letter-reason"]: offsets(m.headers) for m in dead}
    expired = by_reason.pop("expired")

    assert set(by_reason) == {"unknown-task", "task-failed"}
    assert set(by_reason["unknown-task"]) >= {"eta", "x-dead-lettered-at"}
    assert set(by_reason["task-failed"]) >= {"eta", "x-dead-lettered-at"}
    assert {k: v for r in by_reason.values() for k, v in r.items() if v != {"+00:00"}} == {}
    assert expired.pop("expires") == {"+09:00"}  # the sender's header, kept as sent
    assert expired == {"x-exception-message": {"+00:00"}, "x-dead-lettered-at": {"+00:00"}}


ADD = """
from services.reports.examples import add
result = add.delay(1, 1)
result.get(timeout=20)
print(result.id)
"""


def test_result_rows_record_their_time_in_utc_whatever_the_database_s_time_zone(clean_queues, db):
    stack = clean_queues
    name = db.url.database
    with db.begin() as conn:  # as a server configured with timezone = 'Asia/Seoul'
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Seoul'"))
    try:
        worker = stack.worker("reports").start()
        try:
            task_id = client(stack, ADD)
        finally:
            worker.stop()
    finally:
        with db.begin() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" RESET timezone'))
    with db.connect() as conn:
        query = text("SELECT date_done FROM reports.celery_taskmeta WHERE task_id = :t")
        done = conn.execute(query, {"t": task_id}).scalar()

    assert abs((datetime.now(UTC).replace(tzinfo=None) - done).total_seconds()) < 120, done
