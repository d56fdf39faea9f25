"""A service's queue runs only what may arrive there, judged by what the broker vouches for.

Every actor here has its own broker user (as ``topology apply`` creates them): the attacks
use notifier's real credentials, the reports worker runs as reports, the operator as the
admin. Routing keys are checked by topic permissions, ``user_id`` by the broker; headers
are the sender's word and decide nothing.
"""

import json
import subprocess
import sys
import uuid
from datetime import date

import pytest
from sqlalchemy import text

from contracts import GenerateReport
from shared.core.db import migrate
from shared.core.topology import SERVICES
from shared.ops.commands.common import OPS_MIGRATIONS
from shared.ops.dlq import depth
from tests.support import JSON, drain, publish_raw, wait_for

DOCUMENT = {
    "kind": "daily", "day": "2031-01-01", "start": "s", "end": "e", "timezone": "UTC",
    "summary": {"signups": 1_000_000}, "shards": [], "failures": [], "totals": {},
    "breakdown": {},
}  # fmt: skip

#: Per-service users and roles for this module (created by ``topology apply``).


@pytest.fixture(scope="module")
def reports_worker(stack, creds):
    worker = stack.worker(
        "reports",
        AMQP_URL=creds.amqp_url("reports", stack.amqp_url),
        DATABASE_URL=creds.database_url("reports", stack.database_url),
    ).start()
    yield worker
    worker.stop()


def as_notifier(stack, creds, exchange: str, routing_key: str, task: str, body: list,
                **props) -> str:  # fmt: skip
    """Publish a task message with notifier's own credentials; returns its task id."""
    task_id = str(uuid.uuid4())
    publish_raw(
        creds.amqp_url("notifier", stack.amqp_url), exchange, routing_key,
        json.dumps(body).encode(), application_headers={"task": task, "id": task_id}, **JSON,
        **props,
    )  # fmt: skip
    return task_id


def stored_reports(db) -> int:
    with db.connect() as conn:
        query = "SELECT count(*) FROM reports.reports WHERE day = '2031-01-01'"
        return conn.execute(text(query)).scalar()


def task_state(db, task_id: str) -> str | None:
    with db.connect() as conn:
        query = text("SELECT status FROM reports.celery_taskmeta WHERE task_id = :t")
        return conn.execute(query, {"t": task_id}).scalar()


def not_allowed(stack, task_id: str) -> dict:
    """The dead letter of ``task_id`` in reports.dlq, which must say ``not-allowed``."""
    letters = wait_for(lambda: stack.dead_letters("reports"), timeout=30)
    assert [m.headers["id"] for m in letters] == [task_id]
    assert letters[0].headers["x-dead-letter-reason"] == "not-allowed"
    return letters[0].headers


def test_another_service_cannot_run_an_internal_task_of_reports(
    stack,
    creds,
    reports_worker,
    db,
    clean_queues,
):
    probe = "notifier.events"  # subscribed to report.generated: what an announcement reaches
    task_id = as_notifier(stack, creds, "reports", "reports.tasks", "reports.render",
                          [[DOCUMENT], {}, {}])  # fmt: skip
    headers = not_allowed(stack, task_id)
    assert headers["x-task"] == "reports.render"
    signed = as_notifier(stack, creds, "reports", "reports.tasks", "reports.render",
                         [[DOCUMENT], {}, {}], user_id=creds.user("notifier"))  # fmt: skip
    not_allowed(stack, signed)
    assert stored_reports(db) == 0
    assert drain(stack.amqp_url, probe) == []
    # Never run: its only row is the FAILURE a dead letter writes (the caller's get() raises).
    wait_for(lambda: task_state(db, task_id) == "FAILURE", timeout=30)


def test_a_forged_task_header_on_an_event_the_sender_may_publish_is_not_run(
    stack,
    creds,
    reports_worker,
    db,
    clean_queues,
):
    """notifier may publish ``notification.sent``; the header cannot make it a render or
    another service's event type."""
    render = as_notifier(stack, creds, "events", "notification.sent", "reports.render",
                         [[DOCUMENT], {}, {}])  # fmt: skip
    not_allowed(stack, render)
    forged = as_notifier(stack, creds, "events", "notification.sent", "user.signed_up",
                         [[], {"event": {}}, {}])  # fmt: skip
    not_allowed(stack, forged)
    assert stored_reports(db) == 0


def test_commands_from_others_run_with_the_services_own_tasks_and_chord_unlock(
    stack,
    creds,
    reports_worker,
    db,
    clean_queues,
):
    """GenerateReport from notifier's user: its chord, ``celery.chord_unlock`` (a countdown
    through ``celery_delayed_*``) and the steps after it are reports' own messages."""
    command = GenerateReport(kind="daily", day=date(2031, 2, 3)).model_dump(mode="json")
    task_id = as_notifier(stack, creds, "reports", "reports.tasks", GenerateReport.task,
                          [[], command, {}])  # fmt: skip
    wait_for(lambda: task_state(db, task_id) == "SUCCESS", timeout=60)
    assert stack.dead_letters("reports") == []


def test_an_operator_replay_is_judged_as_the_publisher_it_replays(
    stack,
    creds,
    reports_worker,
    db,
    clean_queues,
):
    """Replayed by the operator (whom the check trusts), a render notifier sent is still
    notifier's: not run, dead-lettered not-allowed again, recorded as notifier's."""
    migrate(stack.database_url, "ops", OPS_MIGRATIONS)
    task_id = as_notifier(stack, creds, "reports", "reports.tasks", "reports.render",
                          [[DOCUMENT], {}, {}], user_id=creds.user("notifier"))  # fmt: skip
    wait_for(lambda: depth(stack.amqp_url, SERVICES["reports"]) == 1, timeout=30)
    replay = subprocess.run(
        [sys.executable, "-m", "shared.ops", "dlq", "replay", "reports", "--id", task_id,
         "--include-refused"],
        env=stack.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 of 1" in replay.stdout
    headers = not_allowed(stack, task_id)
    assert headers["x-original-user-id"] == creds.user("notifier")
    assert headers["x-original-queue"] == "reports.tasks"
    assert stored_reports(db) == 0
