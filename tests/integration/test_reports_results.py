"""Results through the PostgreSQL backend, read as a client process would: ``AsyncResult``
of a report command (the source document's tasks: test_the_documents_examples.py)."""

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from contracts import GenerateReport
from tests.support import send_command, wait_for

ROOT = Path(__file__).resolve().parents[2]

#: Follows one task id through the reports result backend and prints each new state.
WATCH = """
import json, sys, time
from services.reports.app import app
result = app.AsyncResult(sys.argv[1])
last, deadline = None, time.monotonic() + 90
while time.monotonic() < deadline:
    state = result.state
    if state != last:
        print(state, flush=True)
        last = state
    if state in ("SUCCESS", "FAILURE"):
        print(json.dumps({"result": result.result}), flush=True)
        break
    time.sleep(0.02)
"""


@pytest.fixture
def reports_worker(clean_queues):
    worker = clean_queues.worker("reports")
    yield worker
    worker.stop()


def result_states(db, *task_ids: str) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:t)"),
            {"t": list(task_ids)},
        )
        return dict(rows.all())


def client(stack, script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=stack.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_generate_report_result_goes_pending_started_success_with_the_report_id(
    stack, reports_worker
):
    from services.reports.workflow import report_id

    command = GenerateReport(kind="daily", day=date(2026, 2, 1))
    task_id = send_command(stack, GenerateReport.task, **command.model_dump(mode="json"))
    watcher = client(stack, WATCH, task_id)
    try:
        assert watcher.stdout.readline().strip() == "PENDING"  # queued, no worker yet
        reports_worker.start()
        out, err = watcher.communicate(timeout=90)
    finally:
        watcher.kill()
    lines = out.splitlines()

    assert lines[:-1] == ["STARTED", "SUCCESS"], err
    assert json.loads(lines[-1]) == {"result": report_id("daily", "2026-02-01")}


def test_a_malformed_generate_report_command_is_dead_lettered_with_its_reason(
    stack, reports_worker
):
    reports_worker.start()
    task_id = send_command(stack, "reports.generate_report", kind="hourly", day="2026-02-30")
    dead = wait_for(lambda: stack.dead_letters("reports"), timeout=30)

    assert [m.headers["id"] for m in dead] == [task_id]
    assert dead[0].headers["x-dead-letter-reason"] == "rejected"
    assert "kind" in dead[0].headers["x-exception-message"]
    assert "day" in dead[0].headers["x-exception-message"]


def test_a_rejected_command_reads_failure_for_good_on_a_prefork_worker(stack, reports_worker, db):
    """On prefork (the worker's default pool) the pool child buffers each task's STARTED row
    for 20 ms; a command rejected at once is recorded FAILURE by the worker's parent
    meanwhile, and the child's STARTED row lands after it. It must not replace the FAILURE
    (before the fix, 11 to 14 of these 20 rows read STARTED for good)."""
    reports_worker.start()
    ids = [send_command(stack, "reports.generate_report", kind="hourly") for _ in range(20)]
    dead = []
    wait_for(lambda: dead.extend(stack.dead_letters("reports")) or len(dead) == len(ids))
    # The parent records FAILURE after the dead letter: wait for the rows themselves.
    wait_for(lambda: Counter(result_states(db, *ids).values()) == {"FAILURE": len(ids)})
    time.sleep(0.3)  # well past the children's STARTED rows (20 ms after each task began)

    assert Counter(result_states(db, *ids).values()) == {"FAILURE": len(ids)}


def test_backend_cleanup_deletes_results_older_than_result_expires(stack, reports_worker, db):
    reports_worker.start()
    old, fresh = (send_command(stack, "reports.add", x=1, y=2) for _ in range(2))
    wait_for(lambda: result_states(db, old, fresh) == {old: "SUCCESS", fresh: "SUCCESS"})
    with db.begin() as conn:  # age one result past result_expires (1 h)
        conn.execute(
            text(
                "UPDATE reports.celery_taskmeta SET date_done = date_done - interval '61 minutes'"
                " WHERE task_id = :t"
            ),
            {"t": old},
        )

    send_command(stack, "celery.backend_cleanup", owner="reports")  # what beat sends hourly

    wait_for(lambda: old not in result_states(db, old, fresh))
    assert result_states(db, old, fresh) == {fresh: "SUCCESS"}
