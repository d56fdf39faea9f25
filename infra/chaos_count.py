"""Counting what became of every event, from the databases, the broker and the SMTP server.

The truth is what signup committed: its users and the ``user.signed_up`` rows of its
outbox (one database per run, so every row is this run's). Each later stage is counted
against it by event id: a welcome delivery ``sent`` in ``notifier.deliveries``, the
welcome e-mail at the SMTP server (by its Message-ID, stable per event), a
``user.signed_up`` fact and a ``notification.sent`` fact in ``reports.facts``. The bad
input must be in every subscriber's DLQ.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from kombu import Connection
from sqlalchemy import Engine, text

from infra.chaos_faults import BAD_PREFIX, BadMessage
from shared.management import Management

MESSAGE_ID = re.compile(r"^Message-ID: <([0-9a-f-]{36})@notifier>", re.MULTILINE | re.IGNORECASE)
SUBSCRIBERS = ("notifier", "reports")


def welcome_message_id(event_id: UUID) -> str:
    """The Message-ID the notifier gives an event's welcome e-mail (Delivery.message_id)."""
    return str(uuid5(NAMESPACE_URL, f"{event_id}/welcome_email"))


@dataclass
class Row:
    stage: str
    expected: int
    delivered: int
    duplicates: int = 0

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.delivered)


@dataclass
class Tally:
    accepted: int
    rows: list[Row] = field(default_factory=list)
    dlq_rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(r.missing for r in self.rows)

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.rows)

    @property
    def dropped(self) -> int:
        return sum(r.missing for r in self.dlq_rows)

    @property
    def ok(self) -> bool:
        return self.lost == self.duplicates == self.dropped == 0

    def table(self) -> str:
        lines = [f"{'stage':<46} {'expected':>8} {'counted':>8} {'lost':>6} {'dup':>5}"]
        for row in self.rows:
            lines.append(
                f"{row.stage:<46} {row.expected:>8} {row.delivered:>8} {row.missing:>6}"
                f" {row.duplicates:>5}"
            )
        lines.append(f"{'bad input (per subscriber)':<46} {'sent':>8} {'in DLQ':>8} {'dropped':>6}")
        for row in self.dlq_rows:
            lines.append(f"{row.stage:<46} {row.expected:>8} {row.delivered:>8} {row.missing:>6}")
        lines += [f"note: {n}" for n in self.notes]
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(
            f"lost={self.lost} duplicates={self.duplicates} dropped={self.dropped} {verdict}"
        )
        return "\n".join(lines)


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
        if q.get("messages") and not q["name"].endswith(".dlq")
    }


def dead_letters(amqp_url: str, queue: str) -> list[dict[str, Any]]:
    """Every message in ``queue``, taken and acked: the run is over, nobody replays them."""
    taken = []
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            taken.append(dict(message.headers or {}))
            channel.basic_ack(message.delivery_tag)
    return taken


def count(
    engine: Engine, amqp_url: str, accepted: int, mails: list[dict], bad: list[BadMessage]
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
    facts = {
        r.event_id
        for r in _rows(engine, "SELECT event_id FROM reports.facts WHERE type = 'user.signed_up'")
    }
    sent_facts = _rows(
        engine,
        "SELECT count(*) FROM reports.facts"
        " WHERE type = 'notification.sent' AND kind = 'welcome_email'",
    )[0][0]
    received = Counter(m for mail in mails for m in MESSAGE_ID.findall(mail["data"]))
    expected_mail = {welcome_message_id(e): e for e in events}
    mailed = {expected_mail[m] for m in received if m in expected_mail}
    tally.rows = [
        Row("signup: signups accepted -> signup.users", accepted, users),
        Row("signup: user.signed_up in outbox -> published", len(events), len(published)),
        Row("notifier: events -> welcome delivery sent", len(events), len(events & sent)),
        Row(
            "smtp: events -> welcome e-mail received",
            len(events),
            len(mailed),
            sum(n - 1 for m, n in received.items() if m in expected_mail and n > 1),
        ),
        Row("reports: facts user.signed_up", len(events), len(events & facts)),
        Row("reports: facts notification.sent (welcome)", len(sent), sent_facts),
    ]
    if unexpected := sum(n for m, n in received.items() if m not in expected_mail):
        tally.notes.append(f"{unexpected} e-mail(s) not belonging to any event")
    if failed := Counter(s for e, s in welcome.items() if s != "sent"):
        tally.notes.append(f"welcome deliveries not sent: {dict(failed)}")
    _count_dead_letters(tally, amqp_url, bad)
    return tally


def _count_dead_letters(tally: Tally, amqp_url: str, bad: list[BadMessage]) -> None:
    expected = {b.id: b for b in bad}
    for name in SUBSCRIBERS:
        letters = dead_letters(amqp_url, f"{name}.dlq")
        found = {str(h.get("id")): h for h in letters if str(h.get("id")).startswith(BAD_PREFIX)}
        tally.dlq_rows.append(Row(f"{name}.dlq", len(expected), len(set(found) & set(expected))))
        wrong = Counter(
            f"{expected[i].kind}->{h.get('x-dead-letter-reason')}"
            for i, h in found.items()
            if i in expected and h.get("x-dead-letter-reason") != expected[i].reason
        )
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
