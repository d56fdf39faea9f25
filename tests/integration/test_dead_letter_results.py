"""A caller whose task was dead-lettered is told at once (a FAILURE row with the reason),
and a dead letter never rewrites a row another task already has (its id is the sender's)."""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from tests.docs import docs_block
from tests.support import JSON, publish_raw, run_client, send_command, send_raw, wait_for

#: A caller of a task no reports worker has: how long ``get`` took, and what it raised.
UNKNOWN = """
import json, time
from services.reports.app import app
result = app.send_task("reports.no_such_task", (1, 2))
started = time.monotonic()
try:
    result.get(timeout=15)
    raised = None
except Exception as exc:
    raised = {"type": type(exc).__name__, "reason": getattr(exc, "reason", None)}
print(json.dumps({"took": time.monotonic() - started, "raised": raised,
                  "status": result.status}))
"""


def test_a_caller_of_an_unknown_task_is_told_at_once_that_it_was_dead_lettered(
    stack, reports_worker
):
    out = json.loads(run_client(stack, UNKNOWN))

    assert out["raised"] == {"type": "DeadLettered", "reason": "unknown-task"}
    assert out["status"] == "FAILURE"
    assert out["took"] < 10, out  # not the caller's 15 s timeout


def test_the_docs_dead_letter_example_runs_as_written(stack, reports_worker):
    run_client(stack, docs_block("architecture/results.md", "a dead-lettered task's result"))


#: Each id's state and exception, read through the reports app as a caller would.
READ = """
import json, sys
from services.reports.app import app
out = {}
for task_id in sys.argv[1:]:
    result = app.AsyncResult(task_id)
    exc = result.result if result.status == "FAILURE" else None
    out[task_id] = {"status": result.status, "type": type(exc).__name__ if exc else None,
                    "reason": getattr(exc, "reason", None),
                    "result": None if exc else result.result}
print(json.dumps(out))
"""


def raw(stack, task: str, task_id: str, body: bytes = b"[[], {}, {}]", props=None, **headers):
    """A message to reports.tasks over plain AMQP, as the reports user would send it."""
    props = {**JSON, **(props or {})}
    publish_raw(stack.amqp_url, "reports", "reports.tasks", body,
                application_headers={"task": task, "id": task_id, **headers}, **props)  # fmt: skip


FAR = (datetime.now(UTC) + timedelta(days=3)).isoformat()
#: Dead-letter reasons decided before any task runs (no row written by Celery), and how.
BEFORE_ANY_TASK = {
    "unknown-task": {"task": "reports.nothing_of_the_kind"},
    "malformed-headers": {"task": "reports.add", "retries": "many"},
    "eta-too-far": {"task": "reports.add", "eta": FAR},
    "undecodable-body": {"task": "reports.add", "body": b"[[1, 2], {"},
    "content-type-not-allowed": {"task": "reports.add", "props": {"content_type": "x/pickle"}},
    "malformed-body": {"task": "reports.add", "body": b'{"not": "a triple"}'},
}


def test_every_message_dead_lettered_before_its_task_ran_reads_failure_with_its_reason(
    stack, reports_worker
):
    ids = {}
    for reason, shape in BEFORE_ANY_TASK.items():
        shape = dict(shape)
        ids[reason] = str(uuid.uuid4())
        raw(stack, shape.pop("task"), ids[reason], **shape)
    dead = []
    wait_for(lambda: dead.extend(stack.dead_letters("reports")) or len(dead) >= len(ids))
    time.sleep(0.3)  # past the rows' write-behind (20 ms)
    got = read(stack, *ids.values())

    assert {m.headers["x-dead-letter-reason"] for m in dead} == set(ids)
    assert {reason: got[ids[reason]] for reason in ids} == {
        reason: {"status": "FAILURE", "type": "DeadLettered", "reason": reason, "result": None}
        for reason in ids
    }


def read(stack, *task_ids: str) -> dict:
    return json.loads(run_client(stack, READ, *task_ids))


def test_a_dead_letter_under_another_task_s_id_leaves_that_task_s_result_alone(
    stack, reports_worker
):
    done = send_command(stack, "reports.add", x=2, y=3)
    failed = send_command(stack, "reports.generate_report", kind="hourly")  # rejected: FAILURE
    final = {"SUCCESS", "FAILURE"}
    before = wait_for(lambda: (r := read(stack, done, failed)) and
                      {v["status"] for v in r.values()} == final and r)  # fmt: skip
    stack.dead_letters("reports")  # the rejected command's

    for forged in (done, failed):  # a sender reusing their ids, in messages no task can run
        send_raw(stack.amqp_url, "reports.nothing_of_the_kind", {}, forged)
    dead = []
    wait_for(lambda: dead.extend(stack.dead_letters("reports")) or len(dead) >= 2)
    time.sleep(0.3)  # past the rows' write-behind (20 ms)

    assert before[done] == {"status": "SUCCESS", "type": None, "reason": None, "result": 5}
    assert before[failed]["type"] == "Reject"  # its own failure, kept
    assert [m.headers["x-dead-letter-reason"] for m in dead] == ["unknown-task"] * 2
    assert read(stack, done, failed) == before


#: A chord one of whose members no reports worker can run: what its caller's get() raised.
CHORD = """
import json, time
from celery import chord
from services.reports.app import app
from shared.worker.dead_results import DeadLettered
header = [app.signature("reports.add", (1, 1)), app.signature("reports.no_such_task")]
result = chord(header, app.signature("reports.sum_results")).apply_async()
started = time.monotonic()
try:
    result.get(timeout=60)
except DeadLettered as exc:
    print(json.dumps({"reason": exc.reason, "took": time.monotonic() - started}))
"""


def test_a_chord_with_a_dead_lettered_member_fails_at_once_not_after_its_timeout(
    stack, reports_worker
):
    out = json.loads(run_client(stack, CHORD))

    assert out["reason"] == "unknown-task"
    assert out["took"] < 10, out  # chord_unlock polls every second; CHORD_TIMEOUT is 3600 s
