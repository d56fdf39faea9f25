"""An outbox row the relay cannot publish is parked with its reason; the rows behind it flow.
Real relay process, broker, database, notifier worker and SMTP sink."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from infra.processes import ROOT
from tests.support import drain, wait_for

#: An event type signup does not publish (a contract renamed under rows already recorded).
UNPUBLISHABLE = "user.renamed"


@pytest.fixture
def notifier(clean_queues):
    worker = clean_queues.worker("notifier").start()
    yield worker
    worker.stop()


@contextmanager
def relay(stack, **env: str) -> Iterator[subprocess.Popen]:
    """``eventful outbox relay signup``, polling every 0.2 s, with ``env`` on top."""
    cmd = [sys.executable, "-m", "shared.ops", "outbox", "relay", "signup", "--interval", "0.2"]
    with open(stack.log_dir / f"relay-{uuid.uuid4().hex[:6]}.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**stack.env, **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def run_ops(stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.ops", *args], cwd=ROOT, env=stack.env, input=stdin,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def poison_row(db, event_type: str = UNPUBLISHABLE) -> str:
    """A row recorded an hour ago that the relay cannot publish; its id."""
    event_id = str(uuid.uuid4())
    body = {"id": event_id, "type": event_type, "version": 1, "source": "signup",
            "occurred_at": "2026-12-06T00:00:00Z", "payload": {}}  # fmt: skip
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO signup.outbox (id, type, body, created_at)"
                " VALUES (:id, :type, CAST(:body AS jsonb), now() - interval '1 hour')"
            ),
            {"id": event_id, "type": event_type, "body": json.dumps(body)},
        )
    return event_id


def signed_up(email: str) -> str:
    """A valid ``user.signed_up`` recorded through the outbox, as the API records it; its id."""
    from contracts import UserSignedUp
    from services.signup.app import service
    from shared.service.outbox import Outbox

    event = UserSignedUp(
        source="signup", payload={"user_id": uuid.uuid4(), "email": email, "name": "Ada"}
    )
    with service.db.transaction() as session:
        Outbox(service).add(session, event)
    return str(event.id)


def row(db, event_id: str):
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT attempts, published_at, parked_at, last_error FROM signup.outbox"
                " WHERE id = :id"
            ),
            {"id": event_id},
        ).first()


def audit(db, event_id: str) -> list:
    with db.connect() as conn:
        return conn.execute(
            text("SELECT action, operator, at, event_type, reason FROM signup.outbox_audit"
                 " WHERE event_id = :id ORDER BY at"),
            {"id": event_id},
        ).all()  # fmt: skip


@pytest.fixture
def empty_outbox(stack, db):
    """Rows other tests left would be published (or parked) by this test's relay."""
    with db.begin() as conn:
        conn.execute(text("DELETE FROM signup.outbox"))
    yield
    with db.begin() as conn:
        conn.execute(text("DELETE FROM signup.outbox"))


def test_a_row_that_keeps_failing_is_parked_with_its_reason_and_the_welcome_email_behind_it_is_sent(
    stack, notifier, db, empty_outbox
):
    """The incident: a row of a type the relay cannot publish, an hour old, held a valid
    ``user.signed_up`` behind it for good (no welcome e-mail) and ``outbox status`` showed
    only "2 unpublished"."""
    poison = poison_row(db)
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    valid = signed_up(email)

    with relay(stack, OUTBOX_MAX_ATTEMPTS="3"):
        wait_for(lambda: stack.smtp.to(email), timeout=30)
        parked = wait_for(lambda: (r := row(db, poison)) and r.parked_at and r, timeout=30)

    assert row(db, valid).published_at is not None
    assert parked.published_at is None and parked.attempts == 3
    assert f"may not publish {UNPUBLISHABLE!r}" in parked.last_error
    status = run_ops(stack, "outbox", "status")
    assert status.returncode == 0, status.stderr
    assert "signup.outbox: 0 unpublished, oldest -, 1 parked" in status.stdout
    [line] = [x for x in status.stdout.splitlines() if poison in x]
    assert UNPUBLISHABLE in line and "attempts=3" in line and "may not publish" in line
    [as_json] = [s for s in json.loads(run_ops(stack, "outbox", "status", "--json").stdout)
                 if s["service"] == "signup"]  # fmt: skip
    assert [p["id"] for p in as_json["parked"]] == [poison]


def test_a_failing_row_under_its_attempt_budget_does_not_delay_the_rows_behind_it(
    stack, notifier, db, empty_outbox
):
    poison = poison_row(db)
    emails = [f"ada-{uuid.uuid4().hex[:6]}@example.com" for _ in range(3)]
    for email in emails:
        signed_up(email)

    with relay(stack, OUTBOX_MAX_ATTEMPTS="1000"):
        for email in emails:
            wait_for(lambda email=email: stack.smtp.to(email), timeout=10)
        failing = row(db, poison)

    assert failing.parked_at is None and failing.published_at is None
    assert failing.attempts >= 1 and "may not publish" in failing.last_error


def test_an_operator_retries_a_parked_row_once_fixed_and_drops_another_each_audited(
    stack, clean_queues, db, empty_outbox
):
    from services.signup.app import service
    from shared.ops.metrics import DatabaseStateCollector
    from tests.support import bind_probe

    probe = bind_probe(stack.amqp_url, "user.signed_up")
    fixed, dropped = poison_row(db), poison_row(db)
    with relay(stack, OUTBOX_MAX_ATTEMPTS="2"):
        wait_for(lambda: row(db, fixed).parked_at and row(db, dropped).parked_at, timeout=30)
        parked = {
            m.name: m.samples
            for m in DatabaseStateCollector(service.celery, stack.database_url).collect()
        }
        assert [s.value for s in parked["eventful_outbox_parked"]] == [2]

        # Not parked, not there: refused, nothing audited.
        assert run_ops(stack, "outbox", "retry", "signup", str(uuid.uuid4())).returncode == 1
        # The operator brings the row to the contract the relay publishes, then retries it.
        with db.begin() as conn:
            conn.execute(
                text(
                    "UPDATE signup.outbox SET type = 'user.signed_up',"
                    " body = jsonb_set(body, '{type}', '\"user.signed_up\"') WHERE id = :id"
                ),
                {"id": fixed},
            )
        retried = run_ops(stack, "outbox", "retry", "signup", fixed)
        assert retried.returncode == 0, retried.stderr
        wait_for(lambda: row(db, fixed).published_at, timeout=10)
        dropping = run_ops(stack, "outbox", "drop", "signup", dropped, "--yes")
        assert dropping.returncode == 0, dropping.stderr

    assert [m.headers["id"] for m in drain(stack.amqp_url, probe)] == [fixed]
    assert row(db, dropped) is None
    [(action, operator, at, event_type, reason)] = audit(db, fixed)
    assert (action, event_type) == ("retry", "user.signed_up") and operator and at
    assert f"may not publish {UNPUBLISHABLE!r}" in reason
    [(action, _, _, event_type, reason)] = audit(db, dropped)
    assert (action, event_type) == ("drop", UNPUBLISHABLE) and "may not publish" in reason
    assert run_ops(stack, "outbox", "drop", "signup", dropped, "--yes").returncode == 1


def test_rows_the_broker_refuses_are_parked_with_its_reason_and_retried_together_once_fixed(
    stack, creds, clean_queues, db, empty_outbox
):
    """As deployed, the relay publishes as signup's own broker user. A topic permission
    that no longer lets it publish ``user.signed_up`` (ACCESS_REFUSED, the channel closed)
    is the rows' failure, not the connection's: they are parked, and once the permission is
    back, ``outbox retry signup --all`` sends them."""
    from shared.ops.management import Management
    from tests.support import bind_probe

    management, user = Management(stack.management_url), creds.user("signup")
    probe = bind_probe(stack.amqp_url, "user.signed_up")
    events = [signed_up(f"ada-{uuid.uuid4().hex[:6]}@example.com") for _ in range(2)]
    [granted] = [p for p in management.topic_permissions(stack.vhost, user)
                 if p["exchange"] == "events"]  # fmt: skip
    management.grant_topic(stack.vhost, user, "events", write="^nothing$", read=granted["read"])
    try:
        with relay(
            stack, OUTBOX_MAX_ATTEMPTS="2", AMQP_URL=creds.amqp_url("signup", stack.amqp_url)
        ):
            parked = wait_for(lambda: all(row(db, e).parked_at for e in events), timeout=30)
            assert parked
            assert all("AccessRefused" in row(db, e).last_error for e in events)
            management.grant_topic(stack.vhost, user, "events", granted["write"], granted["read"])
            retried = run_ops(stack, "outbox", "retry", "signup", "--all")
            assert retried.returncode == 0, retried.stderr
            assert "2 parked row(s) back to the relay" in retried.stdout
            wait_for(lambda: all(row(db, e).published_at for e in events), timeout=15)
    finally:
        management.grant_topic(stack.vhost, user, "events", granted["write"], granted["read"])

    assert sorted(m.headers["id"] for m in drain(stack.amqp_url, probe)) == sorted(events)
    assert [a.action for e in events for a in audit(db, e)] == ["retry", "retry"]


def test_a_broker_that_stops_answering_mid_publish_parks_nothing(
    stack, proxy, clean_queues, db, empty_outbox
):
    """A confirm that never comes (the broker silent, the connection still open) is the
    broker's failure, not the row's: with a budget of one try, a row blamed for it would be
    parked at once."""
    through_proxy = proxy.url(stack.amqp_url)
    with relay(stack, OUTBOX_MAX_ATTEMPTS="1", AMQP_URL=through_proxy):
        first = signed_up(f"ada-{uuid.uuid4().hex[:6]}@example.com")
        wait_for(lambda: row(db, first).published_at, timeout=15)  # connected, then silence
        proxy.partition()
        events = [signed_up(f"ada-{uuid.uuid4().hex[:6]}@example.com") for _ in range(3)]
        wait_for(lambda: any(row(db, e).attempts for e in events), timeout=30)
        proxy.restore()
        wait_for(lambda: all(row(db, e).published_at for e in events), timeout=30)

    assert [row(db, e).parked_at for e in events] == [None, None, None]
    assert max(row(db, e).attempts for e in events) >= 1
