"""Replaying dead letters: once per dead letter, whichever step a crash interrupts.

Identity. Every copy of one death has the same ``letter_id``: the task id and the replay
the message came from (none in its first life). So the worker's second DLX copy of one
message (a confirmed copy whose original's ack failed, the original dying again) is the
same dead letter, and a replayed task that dies again is a new one. The replay rides on
the message as a Celery stamp, which Celery's retries carry over, so a replayed task that
retried before dying still names the replay it came from.

Steps, and what a process killed after each leaves behind:

1. claim: an ``ops.dlq_audit`` row, unique per (service, letter_id), state ``claimed``,
   naming the copy it took (``dead_lettered_at``), committed. Killed: the copies return.
2. publish and ack, in one AMQP transaction: the copy to the work queue, the acks of every
   copy in hand. Killed before ``tx.commit``: the broker drops both; after it: both done.
3. mark: state ``replayed``. Killed before: the copies are gone, the row says ``claimed``.

So a ``claimed`` row whose copy is in hand was never committed (its ack would have gone
with the publish): it is published now. A ``claimed`` row whose copy is not in hand was
replayed, or another reader holds that copy and it comes back to be settled then: either
way another copy of it is not published. A ``replayed`` row skips every later copy.

The limit: RabbitMQ's ``tx`` is atomic against a client that dies, not against the broker
refusing part of a commit. A quorum queue full under ``x-overflow=reject-publish`` drops
the copy while ``tx.commit`` succeeds and the ack stands (seen on 3.10.8). Work queues have
no length limit: do not give them one (argument or policy) while replays may run.
"""

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import amqp
from sqlalchemy import Connection, Engine, Row, text

from shared.core.topology import ServiceTopology
from shared.core.tracing import CAUSATION, CORRELATION
from shared.ops.dlq import DeadLetter, join_results, opened

#: The failure headers are ``x-``; these ``x-`` headers are the message's own.
STORY_IDS = (CORRELATION, CAUSATION)
#: Dead letters a routine replay leaves alone: the worker refused their publisher. Named
#: (``include_refused``), they are judged as that publisher again.
REFUSED = ("not-allowed",)

REPLAY_STAMP = "dlq_replay"
REPLAY_STEPS = ("claimed", "published", "committed", "marked")
CRASH_EXIT = 75


@dataclass
class Replay:
    """One dead letter: every copy of it in the DLQ, and what the replay did."""

    copies: list[DeadLetter]
    outcome: str = ""

    @property
    def letter(self) -> DeadLetter:
        return self.copies[0]


def letter_id(letter: DeadLetter) -> str:
    """The same for every copy of one death of one task (see the module docstring)."""
    stamps = letter.headers.get("stamps")
    previous = stamps.get(REPLAY_STAMP) if isinstance(stamps, dict) else None
    if isinstance(previous, list):
        previous = previous[-1] if previous else None
    return str(uuid5(NAMESPACE_URL, f"{letter.task_id}/{previous or ''}"))


def _grouped(letters: list[DeadLetter]) -> list[Replay]:
    groups: dict[str, Replay] = {}
    for letter in letters:
        key = letter_id(letter) if letter.task_id else f"tag/{letter.message.delivery_tag}"
        groups.setdefault(key, Replay([])).copies.append(letter)
    return list(groups.values())


def _replay_copy(
    letter: DeadLetter, user: str, work_queues: frozenset[str] = frozenset()
) -> amqp.Message:
    """The message as first published, to run now: failure headers gone (its correlation and
    causation ids kept: a replay continues the story it died in), who first published it by
    which route (``DeadLetter.publisher``: the worker judges the replay as them), attempt counter at
    zero, no ``eta`` or ``expires`` (an expired task the operator replays must run, not be
    revoked on arrival again), stamped with the dead letter it replays, and sent as the
    operator's ``user`` (the broker checks it)."""
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("x-") or k in STORY_IDS}
    headers.update(letter.publisher(work_queues))
    given = headers.get("stamps")
    stamps = given if isinstance(given, dict) else {}
    previous = headers.get("stamped_headers")  # a sender may have put anything there
    stamped = [h for h in previous if h != REPLAY_STAMP] if isinstance(previous, list) else []
    headers.update(
        {
            "retries": 0,
            "eta": None,
            "expires": None,
            "stamped_headers": [*stamped, REPLAY_STAMP],
            "stamps": {**stamps, REPLAY_STAMP: letter_id(letter)},
            "x-replayed-at": datetime.now(UTC).isoformat(),
        }
    )
    props = letter.message.properties
    # py-amqp hands a bodyless message over as '', which it would encode with the codec.
    return amqp.Message(
        letter.message.body or b"",
        content_type=props.get("content_type"),
        content_encoding=props.get("content_encoding"),
        correlation_id=props.get("correlation_id"),
        message_id=props.get("message_id"),
        reply_to=props.get("reply_to"),
        application_headers=headers,
        delivery_mode=2,
        user_id=user,
    )


def _claimed(conn: Connection, topo: ServiceTopology, letter: DeadLetter) -> Row[Any] | None:
    """(state, claimed copy) of this dead letter's replay, if there is one."""
    return conn.execute(
        text(
            "SELECT state, dead_lettered_at FROM ops.dlq_audit"
            " WHERE service = :s AND letter_id = :l"
        ),
        {"s": topo.name, "l": letter_id(letter)},
    ).one_or_none()


def _claim(engine: Engine, topo: ServiceTopology, item: Replay) -> Row[Any] | None:
    """Claim the replay unless someone did; the claim that stands, committed."""
    letter = item.letter
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ops.dlq_audit (action, service, operator, messages, task_id, task,"
                " queue, reason, dead_lettered_at, letter_id, state) VALUES ('replay', :s, :o,"
                " :n, :t, :task, :q, :r, :d, :l, 'claimed')"
                " ON CONFLICT (service, letter_id) DO NOTHING"
            ),
            {
                "s": topo.name,
                "o": getpass.getuser(),
                "n": len(item.copies),
                "t": letter.task_id,
                "task": str(letter.headers.get("task") or "")[:255],  # the column's size
                "q": letter.origin,
                "r": str(letter.headers.get("x-dead-letter-reason") or ""),
                "d": letter.dead_lettered_at,
                "l": letter_id(letter),
            },
        )
        return _claimed(conn, topo, letter)


def _mark(engine: Engine, topo: ServiceTopology, letter: DeadLetter) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ops.dlq_audit SET state = 'replayed', replayed_at = now()"
                " WHERE service = :s AND letter_id = :l"
            ),
            {"s": topo.name, "l": letter_id(letter)},
        )


def _reached(step: str, crash_after: str | None) -> None:
    """Fault injection for the crash tests: the process ends here, as a kill would."""
    if step == crash_after:
        os._exit(CRASH_EXIT)


def _skip_reason(topo: ServiceTopology, letter: DeadLetter, include_refused: bool) -> str | None:
    reason = letter.headers.get("x-dead-letter-reason")
    if reason in REFUSED and not include_refused:
        return f"skipped: {reason} (its publisher may not send it; --include-refused to try)"
    if not letter.task_id:
        return "skipped: no usable task id (no worker can run it)"
    if letter.origin not in {q.name for q in topo.work_queues()}:
        return f"skipped: no work queue of {topo.name} to go back to ({letter.origin!r})"
    if letter.status == "SUCCESS":
        return "skipped: already processed (result SUCCESS)"
    return None


def _settle(
    channel: Any,
    engine: Engine,
    topo: ServiceTopology,
    item: Replay,
    dry_run: bool,
    crash_after: str | None,
) -> str:
    """Claim, publish and ack atomically, mark: the outcome of one dead letter."""
    if dry_run:
        with engine.connect() as conn:
            claim = _claimed(conn, topo, item.letter)
    else:
        claim = _claim(engine, topo, item)
    held = {copy.dead_lettered_at for copy in item.copies}
    if claim is not None and claim.state == "replayed":
        return "skipped: this dead letter was replayed before"
    if claim is not None and claim.dead_lettered_at not in held:
        return (
            f"skipped: its replay was claimed for the copy of {claim.dead_lettered_at}, which"
            " is not in the DLQ (replayed then, or another reader holds it)"
        )
    if dry_run:
        return "would replay"
    _reached("claimed", crash_after)
    channel.basic_publish(
        _replay_copy(
            item.letter,
            channel.connection.client.userid,
            frozenset(q.name for q in topo.work_queues()),
        ),
        exchange=topo.name,
        routing_key=item.letter.origin,
    )
    for copy in item.copies:
        channel.basic_ack(copy.message.delivery_tag)
        copy.settled = True
    _reached("published", crash_after)
    channel.tx_commit()
    _reached("committed", crash_after)
    _mark(engine, topo, item.letter)
    _reached("marked", crash_after)
    return "replayed"


def replay(
    amqp_url: str,
    engine: Engine,
    topo: ServiceTopology,
    *,
    ids: set[str] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    crash_after: str | None = None,
    include_refused: bool = False,
) -> list[Replay]:
    """Send dead letters back to their queue; each returned replay's ``outcome`` says what."""
    chosen, sent = [], 0
    with opened(amqp_url, topo) as (channel, letters):
        join_results(engine, topo, letters)
        channel.tx_select()
        for item in _grouped(letters):
            if (ids and item.letter.task_id not in ids) or (limit is not None and sent >= limit):
                continue
            chosen.append(item)
            item.outcome = _skip_reason(topo, item.letter, include_refused) or _settle(
                channel, engine, topo, item, dry_run, crash_after
            )
            sent += item.outcome in ("replayed", "would replay")
    return chosen
