"""The independent ledger: what was published, against where each copy of it ended.

A message reaches one or more services (``events`` fans out; a service's exchange does
not) or ``events.unrouted``. For each arrival the ledger looks for a trace the services
did not write for the ledger's sake:

- ``dead:<reason>``: a copy in the service's DLQ, found by the message's ``message_id``
  (the dead-letter copy keeps it) or, once Celery or a replay republished it, by its task
  id; the reason is ``x-dead-letter-reason``, or ``x-death``'s for native dead-lettering.
- ``handled``: the task's SUCCESS row in ``<service>.celery_taskmeta``; for an event's
  entry task (no result of its own) the rows of the handler tasks it dispatched, whose
  ids derive from the event id (SUCCESS, or themselves dead-lettered).
- ``retrying``: a RETRY row: waiting in the broker for its next attempt.
- ``unrouted``: in ``events.unrouted``.
Nothing found is ``missing``: acked without a trace. Two known gaps are counted apart
(``gap:...``), not failed on, so the table shows them: an unrouted event that carries its
own AMQP ``expiration`` (``events.unrouted`` has no DLX) and a message whose ``eta`` is
far ahead (Celery holds it unacked in the worker). Reasons must be in the documented table
(docs/architecture/failure-semantics.md), read from that page, so the test and the
documentation agree.
"""

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import Engine, text

from shared.core.topology import EVENTS_EXCHANGE, SERVICES, UNROUTED
from tests.fuzz.messages import Published

FAILURES = Path(__file__).resolve().parents[2] / "docs" / "architecture" / "failure-semantics.md"


def documented_reasons() -> tuple[set[str], set[str]]:
    """The documented dead-letter reasons (docs/architecture/failure-semantics.md):
    (``x-dead-letter-reason`` codes, native ``x-death``)."""
    text_ = FAILURES.read_text()
    table = text_.split("| what happened | `x-dead-letter-reason` |", 1)[1].split("\n\n", 1)[0]
    ours, native = set(), set()
    for row in table.splitlines()[2:]:
        cell = row.rstrip(" |").rsplit("|", 1)[-1]
        codes = re.findall(r"`([^`]+)`", cell)
        (native if "x-death" in cell else ours).update(c for c in codes if c != "x-death")
    return ours, native


@dataclass
class DeadCopy:
    service: str
    message_id: str | None
    headers: dict[str, Any]
    body: bytes = b""

    @property
    def reason(self) -> str:
        reason = self.headers.get("x-dead-letter-reason")
        if reason:
            return str(reason)
        deaths = self.headers.get("x-death") or [{}]
        return f"x-death:{deaths[0].get('reason', '')}"


@dataclass
class Observation:
    dead: dict[str, list[DeadCopy]] = field(default_factory=lambda: defaultdict(list))
    unrouted: set[str] = field(default_factory=set)
    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    #: notifier.deliveries by task id: a send done, whether or not a result row was kept.
    deliveries: dict[str, str] = field(default_factory=dict)
    #: After a replay: the messages of the batch that share a task id (by ``repr`` of the
    #: ``id`` header), each dead-lettered before it. ``shared.ops.replay`` knows a dead
    #: letter by task id and replay, so it publishes one copy for all of them: the copy of
    #: any one accounts for each.
    replayed_together: dict[str, set[str]] = field(default_factory=dict)

    def dead_by(self, service: str, *, message_id: str | None = None, task_id: Any = None):
        """Copies of one message: by its ``message_id``, or (republished by a retry or a
        replay, which do not keep it) by its ``id`` header, whatever that holds."""
        together = self.replayed_together.get(repr(task_id), set())
        return [
            c for c in self.dead[service]
            if (message_id and c.message_id == message_id)
            or (task_id is not None and c.headers.get("id") == task_id
                and (not _ours(c.message_id) or c.message_id in together))
        ]  # fmt: skip


def _ours(message_id: str | None) -> bool:
    return bool(message_id and message_id.startswith("fuzz-"))


def arrivals(message: Published) -> list[str]:
    """The services whose queues the broker routes ``message`` to, or ``events.unrouted``."""
    if message.exchange == EVENTS_EXCHANGE:
        subscribers = [n for n, t in SERVICES.items() if message.routing_key in t.subscribes]
        return subscribers or [UNROUTED]
    return [message.exchange]


def peek(channel: Any, queue: str) -> list[Any]:
    """Every message in ``queue``, left there: read without ack, returned when the channel
    closes (a DLQ has no delivery limit, so reading does not cost a message anything)."""
    channel.auto_decode = False
    taken = []
    while (message := channel.basic_get(queue, no_ack=False)) is not None:
        taken.append(message)
    return taken


def observe(amqp_url: str, engine: Engine) -> Observation:
    seen = Observation()
    with Connection(amqp_url) as conn:
        for name in SERVICES:
            channel = conn.channel()
            for m in peek(channel, f"{name}.dlq"):
                copy = DeadCopy(
                    name, m.properties.get("message_id"), m.headers or {}, m.body or b""
                )
                seen.dead[name].append(copy)
            channel.close()
        channel = conn.channel()
        seen.unrouted = {m.properties.get("message_id") for m in peek(channel, UNROUTED)}
        channel.close()
    with engine.connect() as conn:
        for name in SERVICES:
            rows = conn.execute(text(f"SELECT task_id, status FROM {name}.celery_taskmeta"))
            seen.rows[name] = dict(rows.all())
        sent = conn.execute(text("SELECT task_id, status FROM notifier.deliveries"))
        seen.deliveries = dict(sent.all())
    return seen


_handlers: dict[tuple[str, str], list[str]] = {}


def handler_tasks(service: str, event_type: str) -> list[str]:
    """The handler task names an event's entry task dispatches in ``service``."""
    if not _handlers:
        from services.notifier.app import service as notifier
        from services.reports.app import service as reports

        for svc in (notifier, reports):
            for etype, tasks in svc._handlers.items():
                _handlers[(svc.name, etype)] = [task.name for task, _contract in tasks]
    return _handlers.get((service, event_type), [])


def event_id(message: Published) -> str | None:
    try:
        raw = json.loads(message.body)[1]["event"]["id"]
        return str(uuid.UUID(raw))
    except Exception:
        return None


def classify(message: Published, service: str, seen: Observation) -> str:
    """Where ``message`` ended in ``service`` (module docstring)."""
    if service == UNROUTED:
        if message.message_id in seen.unrouted:
            return "unrouted"
        # Known gap, reported rather than hidden: events.unrouted has no DLX, so an event
        # nobody subscribes to that carries its own AMQP expiration is dropped by RabbitMQ.
        return "gap:unrouted-expired" if "expiration" in message.properties else "missing"
    copies = seen.dead_by(service, message_id=message.message_id)
    if copies:
        return f"dead:{copies[0].reason}"
    rows, tid = seen.rows[service], message.task_id
    if tid and rows.get(tid) == "SUCCESS":
        return "handled"
    if tid and service == "notifier" and seen.deliveries.get(tid) == "sent":
        return "handled"
    if copies := seen.dead_by(service, task_id=message.id_header):
        return f"dead:{copies[0].reason}"
    task = (message.headers or {}).get("task")
    handlers = handler_tasks(service, task) if isinstance(task, str) else []
    eid = event_id(message)
    if handlers and eid:
        derived = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{eid}/{h}")) for h in handlers]
        states = {
            "handled" if rows.get(d) == "SUCCESS" or seen.dead_by(service, task_id=d)
            else rows.get(d)
            for d in derived
        }  # fmt: skip
        if states == {"handled"}:
            return "handled"
        if "RETRY" in states or "STARTED" in states:
            return "retrying"
    if tid and rows.get(tid) in ("RETRY", "STARTED"):
        return "retrying"
    if (message.headers or {}).get("ignore_result"):
        # The sender asked for no result row; outside notifier's deliveries nothing else
        # records a run, so such a message is counted apart, not judged.
        return "unverified:ignore_result"
    if _future_eta(message):
        # Known gap, reported rather than hidden: Celery holds a message whose eta is
        # ahead unacked in the worker's memory (quorum queues give no broker-side delay for
        # an eta the publisher set), past RabbitMQ's consumer_timeout if it is far enough.
        return "gap:held-for-future-eta"
    return "missing"


def _future_eta(message: Published) -> bool:
    eta = (message.headers or {}).get("eta")
    try:
        when = datetime.fromisoformat(eta)
    except (TypeError, ValueError):
        return False
    return when.tzinfo is not None and when > datetime.now(UTC) + timedelta(seconds=30)


@dataclass
class Verdict:
    """Per arrival its outcome; problems are what breaks the invariant."""

    outcomes: dict[tuple[str, str], str]
    problems: list[str]
    culprits: list[Published] = field(default_factory=list)


def judge(
    messages: Iterable[Published], seen: Observation, dead_before: set[str] | None = None
) -> Verdict:
    """``dead_before``: after a replay, the messages dead-lettered before it (a message of
    them sharing its task id with another is accounted for by that one's copy)."""
    ours, native = documented_reasons()
    outcomes, problems, culprits = {}, [], []
    by_mid = {}
    messages = list(messages)
    if dead_before:
        by_id: dict[str, set[str]] = defaultdict(set)
        for message in messages:
            if message.message_id in dead_before and message.id_header is not None:
                by_id[repr(message.id_header)].add(message.message_id)
        seen.replayed_together = {k: mids for k, mids in by_id.items() if len(mids) > 1}
    for message in messages:
        by_mid[message.message_id] = message
        for service in arrivals(message):
            outcome = classify(message, service, seen)
            outcomes[(message.message_id, service)] = outcome
            if outcome == "missing":
                problems.append(f"{service}: no trace of {message!r}")
                culprits.append(message)
            copies = seen.dead_by(service, message_id=message.message_id)
            if len(copies) > 1:
                problems.append(f"{service}: dead-lettered twice: {message!r}")
                culprits.append(message)
            if any(c.body != message.body for c in copies):
                problems.append(f"{service}: the dead letter's body is not the one published: "
                                f"{copies[0].body[:200]!r} for {message!r}")  # fmt: skip
                culprits.append(message)
    for service, copies in seen.dead.items():
        for copy in copies:
            reason = copy.reason
            ok = reason in ours or (reason.startswith("x-death:") and reason[8:] in native)
            if not ok:
                culprit = by_mid.get(copy.message_id)
                problems.append(f"{service}: reason {reason!r} is not in the documented table: "
                                f"{culprit or copy.headers!r}")  # fmt: skip
                culprits += [culprit] if culprit else []
    return Verdict(outcomes, problems, culprits)


def settled(verdict: Verdict) -> bool:
    return not any(o in ("missing", "retrying") for o in verdict.outcomes.values())
