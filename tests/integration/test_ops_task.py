"""``eventful task ID`` finds a task in whichever service's schema holds it: the answer a
caller reading through the wrong app (PENDING for ever) does not get."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support import send_command, wait_for

ROOT = Path(__file__).resolve().parents[2]


def eventful(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.ops", *args], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


#: What a caller reading a reports task through signup's app sees.
THROUGH_SIGNUP = """
import sys
from services.signup.app import app
print(app.AsyncResult(sys.argv[1]).state)
"""


def test_a_reports_task_is_found_in_the_reports_schema_where_signup_s_app_reads_pending(
    stack, reports_worker
):
    task_id = send_command(stack, "reports.add", x=2, y=3)
    found = wait_for(lambda: (done := eventful(stack, "task", task_id)).returncode == 0 and done)
    wrong = subprocess.run([sys.executable, "-c", THROUGH_SIGNUP, task_id], cwd=ROOT,
                           env=stack.env, capture_output=True, text=True, timeout=60)  # fmt: skip

    assert found.stdout.splitlines()[0].startswith("reports.celery_taskmeta: SUCCESS")
    assert "task=reports.add" in found.stdout
    assert "result: 5" in found.stdout
    assert wrong.stdout.strip() == "PENDING"  # why the command exists


def test_a_dead_lettered_task_shows_its_reason_and_traceback_as_json(stack, reports_worker):
    task_id = send_command(stack, "reports.no_such_task", task_id=str(uuid.uuid4()))
    done = wait_for(lambda: (r := eventful(stack, "task", task_id, "--json")).returncode == 0 and r)
    [row] = json.loads(done.stdout)

    assert (row["service"], row["status"]) == ("reports", "FAILURE")
    assert row["result"]["exc_type"] == "DeadLettered"
    assert row["result"]["exc_message"][0] == "unknown-task"
    assert "no task named 'reports.no_such_task'" in row["result"]["exc_message"][1]


def test_an_id_no_service_holds_exits_1_naming_where_it_looked(stack):
    done = eventful(stack, "task", str(uuid.uuid4()))

    assert done.returncode == 1
    schemas = "signup.celery_taskmeta, notifier.celery_taskmeta, reports.celery_taskmeta"
    assert f"no row in {schemas}" in done.stderr
    assert "PENDING: queued, or unknown" in done.stderr
