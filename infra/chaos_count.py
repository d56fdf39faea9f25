"""Counting what became of every event, from the databases, the broker and the SMTP server.

The truth is what signup committed: its users and the ``user.signed_up`` rows of its
outbox (one database per run, so every row is this run's). Each later stage is counted
against it by event id: a welcome delivery ``sent`` in ``notifier.deliveries``, the
welcome e-mail at the SMTP server, a ``user.signed_up`` fact and a ``notification.sent``
fact in ``reports.facts``, and the SUCCESS result row of each welcome task and each
``reports.record_signup`` that ran (rows written behind the ack must all arrive). The bad
input must be in every subscriber's DLQ with the reason its kind calls for; a report
workflow started during the database crash must have finished or be in ``reports.dlq``
with a reason.

Duplicates are never counted from tables whose unique keys hide them. They come from
evidence outside the services: the SMTP server's received mail (by Message-ID, and by
recipient, each user is welcomed once), and the broker's own copy of every event
published (``chaos.ledger``, bound to ``events`` with ``#``): two different event ids for
one delivery (``notification.sent``) or one user (``user.signed_up``) are two facts for
one thing. Copies of one event id (a relay whose confirm was lost) are at-least-once by
design, shown but not failed, as are the broker's redeliveries.
"""

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from sqlalchemy import Engine, text

from infra.chaos_faults import BAD_PREFIX, BadMessage
from infra.chaos_ledger import LEDGER, broker_rows, take_all
from infra.chaos_tally import Row, Tally
from shared.ops.management import Management

MESSAGE_ID = re.compile(r"^Message-ID: <([0-9a-f-]{36})@notifier>", re.MULTILINE | re.IGNORECASE)
SUBSCRIBERS = ("notifier", "reports")


def welcome_message_id(event_id: UUID) -> str:
    """The Message-ID the notifier gives an event's welcome e-mail (Delivery.message_id)."""
    return str(uuid5(NAMESPACE_URL, f"{event_id}/welcome_email"))


def welcome_task_id(event_id: UUID) -> str:
    """The id of an event's welcome task (shared/service/declaration.py derives it from the
    event id)."""
    return handler_task_id(event_id, "notifier.send_welcome_email")


def handler_task_id(event_id: UUID, task: str) -> str:
    """The id of the task that runs handler ``task`` for an event
    (shared/service/declaration.py)."""
    return str(uuid5(NAMESPACE_URL, f"{event_id}/{task}"))


def succeeded(engine: Engine, service: str, task_ids: set[str]) -> int:
    """How many of ``task_ids`` have a SUCCESS result row in ``service``'s schema."""
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT count(*) FROM {service}.celery_taskmeta"
                 " WHERE status = 'SUCCESS' AND task_id = ANY(:ids)"),
            {"ids": list(task_ids)},
        ).scalar_one()  # fmt: skip


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)))


def progress(engine: Engine) -> dict[str, int]:
    """How far the pipeline has got; cheap enough to poll while waiting for it to settle."""
    (counts,) = _rows(
        engine,
        "SELECT (SELECT count(*) FROM signup.outbox WHERE published_at IS NULL),"
        " (SELECT count(*) FROM signup.outbox),"
        " (SELECT count(*) FROM notifier.deliveries"
        "   WHERE kind = 'welcome_email' AND status = 'sent'),"
        " (SELECT count(*) FROM reports.facts WHERE type = 'user.signed_up'),"
        " (SELECT count(*) FROM reports.facts WHERE type = 'notification.sent')",
    )
    unsent, events, sent, signup_facts, sent_facts = counts
    return {
        "unsent": unsent, "events": events, "sent": sent,
        "signup_facts": signup_facts, "sent_facts": sent_facts,
    }  # fmt: skip


def complete(p: dict[str, int], accepted: int) -> bool:
    return (
        p["unsent"] == 0
        and p["events"] == p["sent"] == p["signup_facts"] == p["sent_facts"] == accepted
    )


def busy_queues(management_url: str, vhost: str) -> dict[str, int]:
    """Queues still holding work (ready or unacked), delayed retries included."""
    queues = Management(management_url).queues(vhost)
    return {
        q["name"]: q.get("messages", 0)
        for q in queues
        if q.get("messages") and not q["name"].endswith(".dlq") and q["name"] != LEDGER
    }


def dead_letters(amqp_url: str, queue: str) -> list[dict[str, Any]]:
    return [headers for headers, _ in take_all(amqp_url, queue)]


def count(
    engine: Engine,
    amqp_url: str,
    accepted: int,
    mails: list[dict],
    bad: list[BadMessage],
    reports: Sequence[str] = (),
) -> Tally:
    tally = Tally(accepted)
    users = _rows(engine, "SELECT count(*) FROM signup.users")[0][0]
    outbox = _rows(
        engine, "SELECT id, published_at FROM signup.outbox WHERE type = 'user.signed_up'"
    )
    events = {row.id for row in outbox}
    published = {row.id for row in outbox if row.published_at is not None}
    welcome = dict(
        _rows(
            engine, "SELECT caused_by, status FROM notifier.deliveries WHERE kind = 'welcome_email'"
        )
    )
    sent = {e for e, status in welcome.items() if status == "sent"}
    mail_rows, unexpected = _mail_rows(mails, events, accepted)
    from_broker, ledger_note = broker_rows(amqp_url, accepted, sent)
    letters = {name: dead_letters(amqp_url, f"{name}.dlq") for name in SUBSCRIBERS}
    welcome_tasks = {welcome_task_id(e) for e in sent}
    sent_and_dead = sum(1 for h in letters["notifier"] if h.get("id") in welcome_tasks)
    tally.rows = [
        Row("signup: signups accepted -> signup.users", accepted, users),
        Row("signup: user.signed_up in outbox -> published", len(events), len(published)),
        Row("notifier: events -> welcome delivery sent", len(events), len(events & sent)),
        *mail_rows,
        *from_broker,
        Row("notifier.dlq: sent welcomes dead-lettered too", 0, sent_and_dead, sent_and_dead),
        *_reports_rows(engine, events, sent, welcome_tasks),
    ]
    tally.notes.append(ledger_note)
    if unexpected:
        tally.notes.append(f"{unexpected} e-mail(s) not belonging to any event")
    if failed := Counter(s for e, s in welcome.items() if s != "sent"):
        tally.notes.append(f"welcome deliveries not sent: {dict(failed)}")
    _count_dead_letters(tally, letters, bad)
    _count_reports(tally, engine, letters["reports"], reports)
    return tally


def _reports_rows(
    engine: Engine, events: set[Any], sent: set[Any], welcome_tasks: set[str]
) -> list[Row]:
    """The facts reports recorded, and the SUCCESS rows of the tasks that ran (rows written
    behind the ack must all arrive)."""
    facts = {
        r.event_id
        for r in _rows(engine, "SELECT event_id FROM reports.facts WHERE type = 'user.signed_up'")
    }
    sent_facts = _rows(
        engine,
        "SELECT count(*) FROM reports.facts"
        " WHERE type = 'notification.sent' AND kind = 'welcome_email'",
    )[0][0]
    return [
        Row("reports: facts user.signed_up", len(events), len(events & facts)),
        Row("reports: facts notification.sent (welcome)", len(sent), sent_facts),
        Row("results: welcome sent -> SUCCESS row", len(sent),
            succeeded(engine, "notifier", welcome_tasks)),
        Row("results: user.signed_up fact -> SUCCESS row", len(events & facts),
            succeeded(engine, "reports",
                      {handler_task_id(e, "reports.record_signup") for e in events & facts})),
    ]  # fmt: skip


def _mail_rows(mails: list[dict], events: set[Any], accepted: int) -> tuple[list[Row], int]:
    """What the SMTP server received: a welcome per event (by Message-ID) and per user (by
    recipient); and how many e-mails belong to no event."""
    received = Counter(m for mail in mails for m in MESSAGE_ID.findall(mail["data"]))
    expected_mail = {welcome_message_id(e): e for e in events}
    mailed = {expected_mail[m] for m in received if m in expected_mail}
    users_mailed = Counter(
        to for mail in mails for to in mail["to"] if to.endswith("@chaos.example.com")
    )
    unexpected = sum(n for m, n in received.items() if m not in expected_mail)
    return [
        Row(
            "smtp: events -> welcome e-mail received",
            len(events),
            len(mailed),
            sum(n - 1 for m, n in received.items() if m in expected_mail and n > 1),
        ),
        Row(
            "smtp: users -> welcome e-mails by recipient",
            accepted,
            len(users_mailed),
            sum(n - 1 for n in users_mailed.values() if n > 1),
        ),
    ], unexpected


def _reason(headers: dict) -> str:
    if reason := headers.get("x-dead-letter-reason"):
        return str(reason)
    deaths = headers.get("x-death") or [{}]
    return f"x-death:{deaths[0].get('reason')}" if deaths[0].get("reason") else "(none)"


def _count_reports(tally: Tally, engine: Engine, letters: list[dict], ids: list[str]) -> None:
    """Each report workflow: finished (its task SUCCESS), or dead-lettered with a reason
    (any message of its tree: same root id); anything else waits forever, a loss."""
    for task_id in ids:
        state = _rows(
            engine,
            f"SELECT status FROM reports.celery_taskmeta WHERE task_id = '{task_id}'",
        )
        dead = [h for h in letters if task_id in (h.get("root_id"), h.get("id"))]
        if state and state[0][0] == "SUCCESS":
            tally.outcomes["report workflow: finished"] += 1
        elif dead and all(_reason(h) != "(none)" for h in dead):
            tally.outcomes[f"report workflow: dead-lettered ({_reason(dead[0])})"] += 1
        else:
            tally.stuck += 1
            tally.outcomes["report workflow: neither finished nor dead-lettered"] += 1
            tally.notes.append(f"report {task_id}: state {state}, dead letters {dead}")


def _count_dead_letters(tally: Tally, all_letters: dict[str, list], bad: list[BadMessage]) -> None:
    expected = {b.id: b for b in bad}
    for name in SUBSCRIBERS:
        letters = all_letters[name]
        for h in letters:
            tally.outcomes[f"{name}.dlq: {_reason(h)}"] += 1
        found = {str(h.get("id")): h for h in letters if str(h.get("id")).startswith(BAD_PREFIX)}
        tally.dlq_rows.append(Row(f"{name}.dlq", len(expected), len(set(found) & set(expected))))
        wrong = Counter(
            f"{expected[i].kind}->{h.get('x-dead-letter-reason')}"
            for i, h in found.items()
            if i in expected and h.get("x-dead-letter-reason") != expected[i].reason
        )
        tally.misfiled += sum(wrong.values())
        if wrong:
            tally.notes.append(
                f"{name}.dlq: bad input with another reason than expected: {dict(wrong)}"
            )
        good = Counter(
            f"{h.get('x-task')}: {h.get('x-dead-letter-reason', 'x-death')}"
            f" {h.get('x-exception-type', '')}"
            for h in letters
            if not str(h.get("id")).startswith(BAD_PREFIX)
        )
        if good:
            tally.notes.append(f"{name}.dlq: good messages dead-lettered: {dict(good)}")
