"""A task cut by its soft limit and killed by its hard limit right after is dead-lettered
at most once, and nothing of it runs after its dead letter.

Issue 30: ``collect.apply_async(soft_time_limit=1, time_limit=1.01)``. The soft limit's
handler saved progress and published the retry; the hard limit, 10 ms later, killed the
process and the worker dead-lettered the task; the retry then ran the same task id again:
three dead letters for one task, its work going on after it was dead-lettered.
"""

import re
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.test_reports_time_limits import seed_signups
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 2, 14)

#: The issue's call, as a client makes it.
CALL = """
import sys
from services.reports.app import app
app.tasks["reports.collect"].apply_async(
    ({"shards": [], "totals": {}}, "daily", sys.argv[2]), task_id=sys.argv[1],
    soft_time_limit=float(sys.argv[3]), time_limit=float(sys.argv[4]),
)
"""


def call(stack, task_id: str, soft: float, hard: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CALL, task_id, DAY.isoformat(), str(soft), str(hard)],
        cwd=ROOT, env=stack.env, text=True, capture_output=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def slow_scans(clean_queues):
    """Scans of 4 facts per batch, 0.3 s apart: 40 facts outlast a 1 s soft limit."""
    worker = clean_queues.worker(
        "reports", "--concurrency=1", REPORT_SCAN_BATCH="4", REPORT_SCAN_PAUSE="0.3"
    ).start()
    yield worker
    worker.stop()


def status(db, task_id: str) -> str | None:
    with db.connect() as conn:
        return conn.execute(
            text("SELECT status FROM reports.celery_taskmeta WHERE task_id = :t"), {"t": task_id}
        ).scalar()


def runs(worker, task_id: str) -> int:
    """How many times the worker received ``task_id``."""
    return len(re.findall(rf"Task reports\.collect\[{task_id}\] received", worker.output()))


def test_a_task_killed_right_after_its_soft_limit_retry_is_dead_lettered_at_most_once(
    stack, slow_scans, db
):
    seed_signups(db, DAY, 40)
    task_id = str(uuid.uuid4())
    assert call(stack, task_id, 1, 1.01).returncode == 0

    def dead() -> list:
        letters = stack.dead_letters("reports")
        dead_letters.extend(m for m in letters if m.headers.get("id") == task_id)
        return dead_letters

    dead_letters: list = []
    wait_for(lambda: dead() or status(db, task_id) == "SUCCESS", timeout=90)
    settled = runs(slow_scans, task_id)
    time.sleep(8)  # a retry published before the kill would have run by now
    dead()

    assert len(dead_letters) <= 1, [m.headers.get("x-attempts") for m in dead_letters]
    assert runs(slow_scans, task_id) == settled, "the task ran again after it was settled"
