"""The dead-letter and outbox tools of `python -m shared.ops`, on the real broker and database."""

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kombu import Connection
from sqlalchemy import create_engine, text

from shared.core.db import migrate
from shared.core.topology import SERVICES
from shared.ops.commands.common import OPS_MIGRATIONS
from shared.ops.dlq import depth
from shared.ops.management import Management
from shared.ops.replay import CRASH_EXIT, REPLAY_STEPS
from tests.support import free_port, publish_raw, send_raw, wait_for

NOTIFIER = SERVICES["notifier"]


def run_ops(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.ops", *args], env=env, input=stdin, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def db(stack):
    migrate(stack.database_url, "ops", OPS_MIGRATIONS)
    engine = create_engine(stack.database_url)
    yield engine
    engine.dispose()


def scalar(db, sql: str, **params):
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def audit_rows(db, action: str, task_id: str | None = None) -> int:
    return scalar(
        db,
        "SELECT count(*) FROM ops.dlq_audit WHERE action = :a AND service = 'notifier'"
        " AND (CAST(:t AS text) IS NULL OR task_id = :t)",
        a=action,
        t=task_id,
    )


def take_copy(amqp_url: str) -> tuple[str, dict]:
    """The dead letter as it is now (body, properties), left in the DLQ."""
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        message = channel.basic_get(NOTIFIER.dlq, no_ack=False)
        channel.basic_reject(message.delivery_tag, requeue=True)
    properties = {k: v for k, v in message.properties.items() if k != "delivery_mode"}
    return message.body, properties


def put_dead_email(amqp_url: str, task_id: str, to: str, **headers) -> None:
    """A dead `notifier.send_email` straight into the DLQ, with the headers the worker's
    ``dead_letter`` writes: Celery's own, then the ``x-`` failure headers."""
    body = json.dumps([[], {"to": to, "subject": "Replay me", "body": "from the DLQ"}, {}])
    celery = {"lang": "py", "task": "notifier.send_email", "id": task_id, "root_id": task_id}
    celery |= {"parent_id": None, "retries": 0, "eta": None, "expires": None, "origin": "test"}
    failure = {
        "x-dead-letter-reason": "task-failed", "x-exception-type": "ConnectionRefusedError",
        "x-exception-message": "refused", "x-traceback": "", "x-service": "notifier",
        "x-task": "notifier.send_email", "x-attempts": 1, "x-original-exchange": "notifier",
        "x-original-routing-key": "notifier.tasks", "x-original-queue": "notifier.tasks",
        "x-dead-lettered-at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    publish_raw(
        amqp_url, NOTIFIER.dlx, "notifier.tasks", body.encode(),
        content_type="application/json", content_encoding="utf-8",
        application_headers=celery | failure | headers,
    )  # fmt: skip


def tasks_depth(amqp_url: str) -> int:
    with Connection(amqp_url) as conn:
        return conn.channel().queue_declare("notifier.tasks", passive=True).message_count


def replay_rows(db, task_id: str) -> list[tuple[str, int]]:
    with db.connect() as conn:
        sql = "SELECT state, messages FROM ops.dlq_audit WHERE action = 'replay' AND task_id = :t"
        return [tuple(r) for r in conn.execute(text(sql), {"t": task_id})]


def test_a_dead_letter_copied_twice_is_replayed_once_whenever_the_copy_arrives(
    stack, clean_queues, db
):
    """The worker's confirmed DLX copy whose original ack failed: the original dies again and
    a second copy lands (same task, same attempt, later ``x-dead-lettered-at``)."""
    task_id = str(uuid.uuid4())
    put_dead_email(stack.amqp_url, task_id, "twice@example.com")
    put_dead_email(stack.amqp_url, task_id, "twice@example.com", **{"x-delivery-count": 1})
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 2)

    replayed = run_ops(stack.env, "dlq", "replay", "notifier")
    assert replayed.returncode == 0, replayed.stderr
    assert (
        f"replayed: {task_id} notifier.send_email -> notifier.tasks (2 copies)" in replayed.stdout
    )
    assert depth(stack.amqp_url, NOTIFIER) == 0

    put_dead_email(stack.amqp_url, task_id, "twice@example.com", **{"x-delivery-count": 2})
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)
    late = run_ops(stack.env, "dlq", "replay", "notifier")
    assert f"skipped: this dead letter was replayed before: {task_id}" in late.stdout
    assert tasks_depth(stack.amqp_url) == 1
    assert replay_rows(db, task_id) == [("replayed", 2)]


def test_a_replay_killed_after_any_step_replays_each_dead_letter_exactly_once(
    stack, clean_queues, db
):
    """A real process exit (``os._exit``) after each step, then a normal replay: each dead
    letter, present in two copies, reaches its work queue once and is handled once."""
    sent = {}
    for step in REPLAY_STEPS:
        task_id, to = str(uuid.uuid4()), f"killed-{step}-{uuid.uuid4().hex[:6]}@example.com"
        sent[task_id] = to
        put_dead_email(stack.amqp_url, task_id, to)
        put_dead_email(stack.amqp_url, task_id, to, **{"x-delivery-count": 1})
        wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 2)

        killed = run_ops(stack.env, "dlq", "replay", "notifier", "--crash-after", step)
        assert killed.returncode == CRASH_EXIT, (step, killed.stdout, killed.stderr)
        again = run_ops(stack.env, "dlq", "replay", "notifier")
        assert again.returncode == 0, again.stderr
        wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 0)
        # Killed between the broker's commit and the mark, the claim stays: nothing to redo.
        state = "claimed" if step == "committed" else "replayed"
        assert replay_rows(db, task_id) == [(state, 2)], step
    assert tasks_depth(stack.amqp_url) == len(REPLAY_STEPS)

    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        wait_for(lambda: all(stack.smtp.to(to) for to in sent.values()), timeout=30)
        wait_for(lambda: tasks_depth(stack.amqp_url) == 0)
    finally:
        worker.stop()
    assert {to: len(stack.smtp.to(to)) for to in sent.values()} == {to: 1 for to in sent.values()}


def test_a_replayed_expired_task_runs_now(stack, clean_queues, db):
    """Dead-lettered because its ``expires`` passed: the operator who replays it wants it run,
    so the copy must not carry the deadline that would revoke it on arrival again."""
    task_id, to = str(uuid.uuid4()), f"expired-{uuid.uuid4().hex[:6]}@example.com"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    put_dead_email(
        stack.amqp_url, task_id, to, expires=past, eta=past, **{"x-dead-letter-reason": "expired"}
    )
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)
    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        replayed = run_ops(stack.env, "dlq", "replay", "notifier")
        assert f"replayed: {task_id}" in replayed.stdout, replayed.stdout + replayed.stderr
        wait_for(lambda: stack.smtp.to(to), timeout=30)
        status_sql = "SELECT status FROM notifier.celery_taskmeta WHERE task_id = :t"
        wait_for(lambda: scalar(db, status_sql, t=task_id) == "SUCCESS")
    finally:
        worker.stop()
    assert len(stack.smtp.to(to)) == 1


def test_a_replayed_task_that_dies_again_can_be_replayed_again(stack, dead_email, db):
    """A new death (after retries) is a new dead letter, not a copy of the replayed one."""
    task_id, to = dead_email
    still_down = stack.worker("notifier", SMTP_PORT="9", ADMIN_EMAILS="").start()
    try:
        first = run_ops(stack.env, "dlq", "replay", "notifier")
        assert f"replayed: {task_id}" in first.stdout, first.stdout + first.stderr
        wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1, timeout=60)
    finally:
        still_down.stop()
    died_again = stack.dead_letters("notifier")[0]
    assert int(died_again.headers["x-attempts"]) > 1  # it went through retries before dying
    publish_raw(
        stack.amqp_url, NOTIFIER.dlx, "", died_again.body,
        content_type=died_again.content_type, content_encoding=died_again.content_encoding,
        application_headers=died_again.headers,
    )  # fmt: skip
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)

    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        second = run_ops(stack.env, "dlq", "replay", "notifier")
        assert f"replayed: {task_id}" in second.stdout, second.stdout + second.stderr
        wait_for(lambda: stack.smtp.to(to), timeout=30)
    finally:
        worker.stop()
    assert [state for state, _ in replay_rows(db, task_id)] == ["replayed", "replayed"]
    assert len(stack.smtp.to(to)) == 1


@pytest.fixture
def dead_email(stack, clean_queues, db):
    """A `notifier.send_email` that died (nothing listened for SMTP): its task id and recipient."""
    to = f"dead-{uuid.uuid4().hex[:6]}@example.com"
    task_id = str(uuid.uuid4())
    worker = stack.worker("notifier", SMTP_PORT="9", ADMIN_EMAILS="").start()
    try:
        command = {"to": to, "subject": "Replay me", "body": "from the DLQ"}
        send_raw(stack.amqp_url, "notifier.send_email", command, task_id)
        wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1, timeout=60)
    finally:
        worker.stop()
    return task_id, to


def test_a_replayed_dead_letter_is_processed_once_a_dry_run_changes_nothing_and_audited(
    stack, dead_email, db
):
    task_id, to = dead_email
    listed = run_ops(stack.env, "dlq", "list", "notifier")
    assert listed.returncode == 0, listed.stderr
    assert task_id in listed.stdout and "task-failed" in listed.stdout
    assert "result=FAILURE" in listed.stdout and "ConnectionRefusedError" in listed.stdout

    dry = run_ops(stack.env, "dlq", "replay", "notifier", "--dry-run")
    assert f"would replay: {task_id} notifier.send_email -> notifier.tasks" in dry.stdout
    other = run_ops(stack.env, "dlq", "replay", "notifier", "--id", str(uuid.uuid4()))
    assert "replayed 0 of 0" in other.stdout
    assert depth(stack.amqp_url, NOTIFIER) == 1
    assert audit_rows(db, "replay", task_id) == 0
    interrupted_copy = take_copy(stack.amqp_url)

    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        replayed = run_ops(stack.env, "dlq", "replay", "notifier")
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed: {task_id}" in replayed.stdout
        wait_for(lambda: stack.smtp.to(to), timeout=30)
        status_sql = "SELECT status FROM notifier.celery_taskmeta WHERE task_id = :t"
        wait_for(lambda: scalar(db, status_sql, t=task_id) == "SUCCESS")
        assert depth(stack.amqp_url, NOTIFIER) == 0
        assert audit_rows(db, "replay", task_id) == 1
        assert (
            scalar(db, "SELECT queue FROM ops.dlq_audit WHERE task_id = :t", t=task_id)
            == "notifier.tasks"
        )

        again = run_ops(stack.env, "dlq", "replay", "notifier")
        assert "replayed 0 of 0" in again.stdout

        # A replay interrupted between publishing and acking leaves the dead letter behind.
        body, properties = interrupted_copy
        publish_raw(stack.amqp_url, NOTIFIER.dlx, "", body, **properties)
        wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)
        skipped = run_ops(stack.env, "dlq", "replay", "notifier")
        assert f"skipped: already processed (result SUCCESS): {task_id}" in skipped.stdout
        assert "replayed 0 of 1" in skipped.stdout
    finally:
        worker.stop()
    assert audit_rows(db, "replay", task_id) == 1
    assert len(stack.smtp.to(to)) == 1


def test_purge_asks_first_and_is_audited(stack, clean_queues, db):
    publish_raw(stack.amqp_url, NOTIFIER.dlx, "", b"{}", content_type="application/json")
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)
    before = audit_rows(db, "purge")

    declined = run_ops(stack.env, "dlq", "purge", "notifier", stdin="n\n")
    assert declined.returncode == 1 and "nothing purged" in declined.stdout
    assert depth(stack.amqp_url, NOTIFIER) == 1

    purged = run_ops(stack.env, "dlq", "purge", "notifier", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 message(s) from notifier.dlq" in purged.stdout
    assert depth(stack.amqp_url, NOTIFIER) == 0
    assert audit_rows(db, "purge") == before + 1


def test_a_wrong_service_name_lists_the_known_ones(stack):
    result = run_ops(stack.env, "dlq", "list", "notifer")
    assert result.returncode == 2
    assert "unknown service 'notifer'; known services: notifier, reports, signup" in result.stderr


def test_an_unreachable_broker_is_named_in_the_error(stack):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    result = run_ops({**stack.env, "AMQP_URL": url}, "dlq", "list", "notifier")
    assert result.returncode == 2
    assert "cannot reach the broker at amqp://guest:**@127.0.0.1" in result.stderr


def test_missing_permissions_are_reported_as_such(stack):
    management = Management(stack.management_url)
    user = f"t{uuid.uuid4().hex[:6]}-nobody"
    management.put_user(user, "pw")
    management.grant(stack.vhost, user, "^$", "^$", "^$")
    try:
        url = stack.amqp_url.split(";")[0].replace("guest:guest@", f"{user}:pw@")
        result = run_ops({**stack.env, "AMQP_URL": url}, "dlq", "list", "notifier")
    finally:
        management.delete_user(user)
    assert result.returncode == 2
    assert "the broker refused access" in result.stderr and "notifier.dlq" in result.stderr


def test_outbox_status_shows_unpublished_rows_and_the_oldest_age(stack, db):
    event_id = uuid.uuid4()
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO signup.outbox (id, type, body, created_at, attempts) VALUES"
                " (:id, 'user.signed_up', '{}', now() - interval '1 hour', 0)"
            ),
            {"id": event_id},
        )
    try:
        result = run_ops(stack.env, "outbox", "status")
    finally:
        with db.begin() as conn:
            conn.execute(text("DELETE FROM signup.outbox WHERE id = :id"), {"id": event_id})
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("signup.outbox:"))
    age = float(line.split("oldest ", 1)[1].split("s,", 1)[0])
    assert age >= 3600 and " 0 unpublished" not in line


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(b"", "bogus"), (b"\xfe\xff\x00[", "utf-16"), (b"\xfe\xff[not json \x80", "latin-1")],
)
def test_a_replay_sends_the_body_bytes_as_dead_lettered_whatever_the_content_encoding(
    stack, clean_queues, db, body, encoding
):
    """Found by the fuzzer (tests/fuzz): an empty dead letter whose ``content_encoding``
    names no codec made ``dlq replay`` crash (py-amqp hands a bodyless message over as
    ``''`` and encodes it with that codec), and a body decoded by its codec on the way
    in was re-encoded on the way out (a UTF-16 byte-order mark flipped)."""
    task_id = str(uuid.uuid4())
    put_dead_email(stack.amqp_url, task_id, "enc@example.com")
    with Connection(stack.amqp_url) as conn:  # the same dead letter, with this encoding
        channel = conn.channel()
        channel.auto_decode = False
        dead = channel.basic_get(NOTIFIER.dlq, no_ack=True)
    publish_raw(stack.amqp_url, NOTIFIER.dlx, "notifier.tasks", body, content_type="text/plain",
                content_encoding=encoding, application_headers=dead.headers)  # fmt: skip

    replayed = run_ops(stack.env, "dlq", "replay", "notifier")

    assert replayed.returncode == 0, replayed.stderr
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        channel.auto_decode = False
        again = channel.basic_get("notifier.tasks", no_ack=True)
    assert (again.body or b"") == body  # py-amqp: a bodyless message reads as ''
    assert again.properties["content_encoding"] == encoding


def test_a_dead_letter_whose_id_is_not_a_usable_task_id_is_skipped_and_the_rest_replayed(
    stack, clean_queues, db
):
    """Found by the fuzzer (tests/fuzz): a dead letter whose ``id`` header was a table (or a
    string longer than any task id column) made ``dlq replay`` fail on its audit row, and
    no dead letter after it in the DLQ could be replayed."""
    for bad in ({"not": "an id"}, "x" * 300):
        put_dead_email(stack.amqp_url, str(uuid.uuid4()), "bad@example.com", id=bad)
    good = str(uuid.uuid4())
    put_dead_email(stack.amqp_url, good, "fine@example.com")

    replayed = run_ops(stack.env, "dlq", "replay", "notifier")

    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert f"replayed: {good}" in replayed.stdout
    assert replayed.stdout.count("skipped: no usable task id") == 2, replayed.stdout
    assert depth(stack.amqp_url, NOTIFIER) == 2


def test_a_dead_letter_with_garbage_headers_is_replayed(stack, clean_queues, db):
    """Found by the fuzzer (tests/fuzz): a ``stamped_headers`` header that was not a list,
    or a task name longer than the audit column, made ``dlq replay`` fail, and no dead
    letter after it could be replayed."""
    task_id = str(uuid.uuid4())
    put_dead_email(stack.amqp_url, task_id, "stamps@example.com", stamped_headers=7, stamps=[1],
                   task="notifier." + "n" * 300)  # fmt: skip

    replayed = run_ops(stack.env, "dlq", "replay", "notifier")

    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert f"replayed: {task_id}" in replayed.stdout
