"""The daily report: exact counts from the read model, built by group -> chord -> chain."""

import json
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from kombu import Connection
from sqlalchemy import text

from contracts import (
    GenerateReport,
    NotificationFailed,
    NotificationPayload,
    NotificationSent,
    UserSignedUp,
    UserSignedUpPayload,
)
from shared.contracts.models import Event
from tests.support import drain, publish_raw, send_command, wait_for

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.fixture
def generated(stack):
    """A queue bound to ``events`` for ``report.generated``: the announcements, as the
    notifier would receive them."""
    name = f"probe.report.generated.{uuid.uuid4().hex[:8]}"
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "events", "report.generated")
    return name


def publish(stack, event: Event) -> None:
    """Publish an event in the documented wire format, as any upstream publisher would."""
    body = json.dumps([[], {"event": event.model_dump(mode="json")}, {}]).encode()
    publish_raw(
        stack.amqp_url, "events", event.type, body,
        content_type="application/json", content_encoding="utf-8",
        application_headers={"task": event.type, "id": str(event.id)},
    )  # fmt: skip


def signup_at(at: datetime) -> UserSignedUp:
    email = f"u-{uuid.uuid4().hex[:8]}@example.com"
    payload = UserSignedUpPayload(user_id=uuid.uuid4(), email=email, name="U")
    return UserSignedUp(source="test", occurred_at=at, payload=payload)


def notification_at(cls, at: datetime, channel: str, error: str | None = None) -> Event:
    payload = NotificationPayload(
        delivery_id=uuid.uuid4().hex, kind="welcome_email", channel=channel,
        recipient="someone@example.com" if channel == "email" else "+821012345678", error=error,
    )  # fmt: skip
    return cls(source="notifier", occurred_at=at, payload=payload)


def day_of_events(day: date) -> list[Event]:
    """Known events in and just outside ``day`` (Asia/Seoul): 3 signups, 3 e-mails and
    1 SMS sent, 2 failures inside; one signup on each side of midnight outside."""
    midnight = datetime.combine(day, datetime.min.time(), SEOUL)
    at = lambda hours, seconds=0: midnight + timedelta(hours=hours, seconds=seconds)  # noqa: E731
    return [
        signup_at(at(0)),  # the first instant of the day counts
        signup_at(at(9, 30)),
        signup_at(at(23, 3599)),  # the last second too
        signup_at(at(0, -1)),  # the day before
        signup_at(at(24)),  # the day after
        notification_at(NotificationSent, at(0, 5), "email"),
        notification_at(NotificationSent, at(9, 40), "email"),
        notification_at(NotificationSent, at(23, 10), "email"),
        notification_at(NotificationSent, at(9, 50), "sms"),
        notification_at(NotificationFailed, at(10), "email", "550 mailbox unavailable"),
        notification_at(NotificationFailed, at(11), "sms", "gateway 503"),
    ]


EXPECTED = {
    "signups": 3,
    "notifications_sent": 4,
    "notifications_failed": 2,
    "sent_email": 3,
    "sent_sms": 1,
    "failed_email": 1,
    "failed_sms": 1,
}


def facts_count(db, event_ids) -> int:
    with db.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM reports.facts WHERE event_id = ANY(:ids)"),
            {"ids": list(event_ids)},
        ).scalar()


HANDLER = {
    "user.signed_up": "reports.record_signup",
    "notification.sent": "reports.record_notification_sent",
    "notification.failed": "reports.record_notification_failed",
}


def runs(worker, events) -> int:
    """How many times the worker ran the handler of every one of ``events`` (the least):
    a handler's task id is derived from the event id, so each delivery runs the same id."""
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{e.id}/{HANDLER[e.type]}")) for e in events]
    log = worker.output()
    return min(
        log.count(f"{HANDLER[e.type]}[{i}] succeeded") for e, i in zip(events, ids, strict=True)
    )


def report_row(db, kind: str, day: date):
    with db.connect() as conn:
        return conn.execute(
            text("SELECT * FROM reports.reports WHERE kind = :k AND day = :d"),
            {"k": kind, "d": day},
        ).one_or_none()


def shard_tasks_run(db, day: date) -> int:
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM reports.celery_taskmeta WHERE name = 'reports.count_shard'"
                " AND status = 'SUCCESS' AND convert_from(args, 'UTF8') LIKE :d"
            ),
            {"d": f'["{day.isoformat()}T%'},
        ).scalar()


def generate(stack, kind: str, day: date) -> str:
    command = GenerateReport(kind=kind, day=day)
    return send_command(stack, GenerateReport.task, **command.model_dump(mode="json"))


def test_a_daily_report_counts_exactly_the_events_of_its_seoul_day(
    stack, reports_worker, db, generated
):
    day = date(2026, 3, 14)
    events = day_of_events(day)
    for event in events:
        publish(stack, event)
    wait_for(lambda: facts_count(db, [e.id for e in events]) == len(events))

    generate(stack, "daily", day)
    row = wait_for(lambda: report_row(db, "daily", day), timeout=60)

    assert row.summary == EXPECTED
    shards = row.document["shards"]
    assert len(shards) == 24 and shard_tasks_run(db, day) == 24  # one count task per hour
    per_hour = {s["start"][11:13]: s["counts"] for s in shards if s["counts"]}
    assert per_hour == {
        "00": {"user.signed_up": 1, "notification.sent": 1},
        "09": {"user.signed_up": 1, "notification.sent": 2},
        "10": {"notification.failed": 1},
        "11": {"notification.failed": 1},
        "23": {"user.signed_up": 1, "notification.sent": 1},
    }
    assert row.document["scanned"] == 9  # collect's scan agrees with the chord's sums
    assert "| signups | 3 |" in row.markdown
    assert "email welcome_email to someone@example.com: 550 mailbox unavailable" in row.markdown

    announced = wait_for(lambda: drain(stack.amqp_url, generated))
    assert len(announced) == 1
    event = json.loads(announced[0].body)[1]["event"]
    assert event["payload"] == {
        "report_id": str(row.id), "kind": "daily", "day": "2026-03-14", "summary": EXPECTED,
    }  # fmt: skip


def test_replayed_and_duplicated_events_do_not_change_the_counts(
    stack, reports_worker, db, generated
):
    day = date(2026, 3, 18)  # far from the other test's day and its neighbours
    events = day_of_events(day)
    for event in events + events:  # every event delivered twice
        publish(stack, event)
    wait_for(lambda: facts_count(db, [e.id for e in events]) == len(events))
    generate(stack, "daily", day)
    first = wait_for(lambda: report_row(db, "daily", day), timeout=60)

    wait_for(lambda: runs(reports_worker, events) == 2)
    for event in events:  # a replay of the whole day, after the report
        publish(stack, event)
    wait_for(lambda: runs(reports_worker, events) == 3)
    generate(stack, "daily", day)
    second = wait_for(
        lambda: (r := report_row(db, "daily", day)) and r.generated_at > first.generated_at and r,
        timeout=60,
    )

    assert first.summary == second.summary == EXPECTED
    assert second.id == first.id  # regenerated in place, not a second report
    assert facts_count(db, [e.id for e in events]) == len(events)
    assert len(wait_for(lambda: drain(stack.amqp_url, generated))) >= 1


def test_a_weekly_summary_adds_up_its_seven_seoul_days(stack, reports_worker, db):
    week = date(2026, 4, 6)  # a Monday
    events = day_of_events(date(2026, 4, 8))  # its neighbours' events fall in the week too
    for event in events:
        publish(stack, event)
    wait_for(lambda: facts_count(db, [e.id for e in events]) == len(events))

    generate(stack, "weekly", week)
    row = wait_for(lambda: report_row(db, "weekly", week), timeout=60)

    assert row.summary == {**EXPECTED, "signups": 5}
    assert [s["start"][:10] for s in row.document["shards"]] == [
        (week + timedelta(days=i)).isoformat() for i in range(7)
    ]


def test_the_scheduled_daily_report_covers_yesterday_in_seoul(stack, reports_worker, db):
    yesterday = datetime.now(SEOUL).date() - timedelta(days=1)
    send_command(stack, "reports.daily_report")  # what beat sends at midnight

    row = wait_for(lambda: report_row(db, "daily", yesterday), timeout=60)
    assert row.document["start"] == f"{yesterday.isoformat()}T00:00:00+09:00"
