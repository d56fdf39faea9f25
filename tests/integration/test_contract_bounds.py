"""Contracts and the columns that store them agree: what one service may publish, the
next can store; what exceeds a contract is rejected at the edge, never half-stored."""

import uuid

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from contracts import NotificationPayload, UserSignedUpPayload
from shared.contracts.models import max_length
from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for


def notified(db) -> list[str]:
    with db.connect() as conn:
        return (
            conn.execute(text("SELECT subject FROM reports.facts WHERE type = 'notification.sent'"))
            .scalars()
            .all()
        )


def subjects_of(db, event_ids) -> list[str]:
    with db.connect() as conn:
        return (
            conn.execute(
                text("SELECT subject FROM reports.facts WHERE event_id::text = ANY(:ids)"),
                {"ids": list(event_ids)},
            )
            .scalars()
            .all()
        )


def test_an_admin_notice_to_many_admins_is_recorded_by_reports(clean_queues, db):
    stack = clean_queues
    admins = [f"admin-{i:03d}-{uuid.uuid4().hex[:12]}@example.com" for i in range(60)]
    notifier = stack.worker("notifier", ADMIN_EMAILS=",".join(admins)).start()
    reports = stack.worker("reports").start()
    event = envelope(f"many-admins-{uuid.uuid4().hex[:6]}@example.com")
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: all(stack.smtp.to(a) for a in admins), timeout=60)
        notice = wait_for(lambda: [s for s in notified(db) if s.startswith(admins[0])], 60)
    finally:
        notifier.stop()
        reports.stop()
    assert stack.dead_letters("notifier") == []
    assert stack.dead_letters("reports") == []
    assert len(notice) == 1
    assert len(notice[0]) <= max_length(NotificationPayload, "recipient")
    assert notice[0].endswith(" more)")


def test_a_notification_over_its_contract_is_dead_lettered_by_reports(clean_queues, db):
    stack = clean_queues
    limit = max_length(NotificationPayload, "recipient")
    reports = stack.worker("reports").start()
    sent = {}
    try:
        for size in (limit, limit + 1):
            event = envelope("unused@example.com")
            event |= {"type": "notification.sent", "source": "upstream", "payload": {
                "delivery_id": f"d-{size}", "kind": "welcome_email", "channel": "email",
                "recipient": "r" * size,
            }}  # fmt: skip
            publish_raw(stack.amqp_url, "events", "notification.sent", framed(event),
                        application_headers={"task": "notification.sent", "id": event["id"]},
                        **JSON)  # fmt: skip
            sent[size] = event["id"]
        dead = wait_for(lambda: stack.dead_letters("reports"), timeout=30)
        stored = wait_for(lambda: subjects_of(db, sent.values()), timeout=30)
    finally:
        reports.stop()
    assert [len(s) for s in stored] == [limit]
    assert [m.headers["id"] for m in dead] == [sent[limit + 1]]
    assert dead[0].headers["x-dead-letter-reason"] == "rejected"
    assert "recipient" in dead[0].headers["x-exception-message"]


def test_every_column_that_stores_a_contract_field_takes_its_size_from_the_contract(db):
    stored = {
        ("reports", "facts", "subject"): max(
            max_length(NotificationPayload, "recipient"),
            max_length(UserSignedUpPayload, "email"),
        ),
        ("reports", "facts", "kind"): max_length(NotificationPayload, "kind"),
        ("signup", "users", "email"): max_length(UserSignedUpPayload, "email"),
        ("signup", "users", "name"): max_length(UserSignedUpPayload, "name"),
        ("signup", "users", "phone"): max_length(UserSignedUpPayload, "phone"),
    }
    inspector = sa_inspect(db)
    for (schema, table, column), size in stored.items():
        columns = {c["name"]: c for c in inspector.get_columns(table, schema=schema)}
        assert columns[column]["type"].length == size, f"{schema}.{table}.{column}"
