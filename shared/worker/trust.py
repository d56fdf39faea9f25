"""Who may ask what of a worker: every part of a message the platform or Celery obeys.

A Celery message carries more than a task and its arguments: follow-up work (the body's
embed), control headers (time limits, retries, groups, ...) and the platform's own ``x-``
headers. The worker obeys all of them with the service's identity, so they count only from
a publisher the service trusts (its own broker user, or the operator outside a replay:
``shared.worker.allowed.publisher``). From anyone else ``screen`` keeps what any publisher may
say, drops the platform's own headers and any header nobody reads, and refuses
(``not-allowed``, naming it) whatever asks for something. Shapes and ranges are checked
for everyone, before this (``shared.worker.wire``).

``PARTS`` is the one table: the README's ("Isolation and credentials", ``python -m
shared.worker.trust`` prints it) and the standing test (``tests/integration/test_trust_table.py``)
are generated from it. A header named like any other attribute of Celery's request
(``Context``) is refused: Celery copies every header into the request, so ``callbacks``,
``is_eager`` or ``headers`` sent as headers become what the task runs with.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.app.task import Context

#: What happens when someone other than the service sets the part (the table's column).
ANYONE = "read as sent"
DEFAULT_ONLY = "kept at Celery's default, else refused"
DROPPED = "dropped"
REFUSED = "refused"
NOBODY = "malformed from anyone"
BROKER = "only the publisher's own user: the broker refuses others"
#: Celery's embed: follow-up work the receiving worker publishes after the task.
EMBED = ("callbacks", "errbacks", "chain", "chord")
#: The stamp a DLQ replay adds (``shared.ops.replay``): the platform's, not the sender's.
REPLAY_STAMP = "dlq_replay"


@dataclass(frozen=True)
class Part:
    """One row: a message part, who may set it, and what a value from someone else does.

    ``harmless``: for ``DEFAULT_ONLY`` parts, whether a value asks for nothing.
    ``probe``: what the standing test sends as another service and as an upstream (a
    callable is called; ``"{id}"`` becomes the task id); ``outcome`` what must follow:
    ``runs``, or the dead letter's reason (``on_events``: on the events route, if other).
    ``proof``: the test that backs a row with no probe.
    """

    where: str
    names: tuple[str, ...]
    others: str
    why: str
    harmless: Callable[[Any], bool] = lambda value: True
    probe: Any = None
    outcome: str = "runs"
    on_events: str = ""
    proof: str = ""


def _in(*defaults: Any) -> Callable[[Any], bool]:
    return lambda value: value in defaults


def _soon() -> str:
    return (datetime.now(UTC) + timedelta(seconds=1)).isoformat()


def _later() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def _only_replay_stamps(value: Any) -> bool:
    return not value or (isinstance(value, dict | list) and set(value) == {REPLAY_STAMP})


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#: Follow-up work as a probe: any task will do, the part is refused whatever it names.
SIGNATURE = {"task": "celery.accumulate", "args": [1], "kwargs": {}, "options": {},
             "immutable": True}  # fmt: skip

#: Header names with a row of their own; every other name of Celery's request is refused.
_NAMED_HEADERS = (
    "task", "id", "lang", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "eta",
    "expires", "shadow", "group", "group_index", "retries", "timelimit", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
)  # fmt: skip


def _request_attributes() -> tuple[str, ...]:
    """Names Celery's request (``Context``) has, which a header of that name overwrites."""
    names = {n for n in vars(Context) if not n.startswith("__")} - set(_NAMED_HEADERS)
    return tuple(sorted(names | set(EMBED)))


PARTS: tuple[Part, ...] = (
    Part("property", ("user_id",), BROKER,
         "who published: decides trust (shared.worker.allowed)",
         probe="another user", outcome="broker refuses"),
    Part("property", ("content_type",), ANYONE, "JSON only, for everyone",
         probe="application/x-python-serialize", outcome="content-type-not-allowed"),
    Part("property", ("content_encoding",), ANYONE, "the body's text encoding", probe="utf-8"),
    Part("property", ("reply_to", "correlation_id", "message_id", "type", "app_id"), ANYONE,
         "copied into the request or the dead letter; nothing acts on them", probe="x"),
    Part("property", ("priority",), ANYONE, "copied into the request; queues have none",
         probe=9),
    Part("property", ("timestamp",), ANYONE, "copied into the dead letter", probe=1_700_000_000),
    Part("property", ("expiration",), ANYONE, "the broker expires the sender's own message",
         probe="60000"),
    Part("header", ("task",), ANYONE, "which task: the route decides if it may run here",
         proof="tests/integration/test_not_allowed.py"),
    Part("header", ("id",), ANYONE, "the task id (results, deduplication)",
         proof="tests/integration/test_malformed_messages.py"),
    Part("header", ("lang", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin"),
         ANYONE, "descriptive: logs, result rows", probe="someone-else"),
    Part("header", ("x-correlation-id", "x-causation-id", "traceparent", "tracestate"),
         ANYONE, "the story's ids and trace context, continued", probe=TRACEPARENT),
    Part("header", ("eta",), ANYONE,
         "delays the sender's own message, at most consumer_timeout / 2", probe=_soon),
    Part("header", ("expires",), ANYONE,
         "cancels the sender's own message (dead-lettered `expired`)", probe=_later),
    Part("header", ("retries",), DEFAULT_ONLY, "spends the task's retries",
         harmless=_in(None, 0), probe=1000, outcome="not-allowed"),
    Part("header", ("timelimit",), DEFAULT_ONLY,
         "time limits of the receiver's pool process: positive, bounded, soft < hard",
         harmless=_in(None, [None, None]), probe=[30, 20], outcome="not-allowed"),
    Part("header", ("group",), DEFAULT_ONLY, "membership of a group: results, chord parts",
         harmless=_in(None), probe="g-1", outcome="not-allowed"),
    Part("header", ("group_index",), DEFAULT_ONLY, "the place in a group's results",
         harmless=_in(None), probe=0, outcome="not-allowed"),
    Part("header", ("ignore_result",), ANYONE,
         "no result row for the sender's own request (every event a relay publishes)",
         probe=True),
    Part("header", ("shadow",), DEFAULT_ONLY, "the name logs and results show",
         harmless=_in(None), probe="another.task", outcome="not-allowed"),
    Part("header", ("replaced_task_nesting",), DEFAULT_ONLY, "canvas replacement depth",
         harmless=_in(None, 0), probe=3, outcome="not-allowed"),
    Part("header", ("stamped_headers",), DEFAULT_ONLY,
         "stamps (revoke by stamp); a DLQ replay's own is allowed",
         harmless=_only_replay_stamps, probe=["who"], outcome="not-allowed"),
    Part("header", ("stamps",), DEFAULT_ONLY,
         "stamps (revoke by stamp); a DLQ replay's own is allowed",
         harmless=_only_replay_stamps, probe={"who": "me"}, outcome="not-allowed"),
    Part("header", ("x-outage-waited", "x-accepted-delivery", "x-original-user-id",
                    "x-original-exchange", "x-original-routing-key", "x-replayed-at"),
         DROPPED, "the platform's own: an outage's wait, an accepted send, a replay's origin",
         probe="{id}/email"),
    Part("header", _request_attributes(), REFUSED,
         "Celery copies headers into its request: follow-up work, eagerness, the request's"
         " own fields", probe=[SIGNATURE], outcome="not-allowed"),
    Part("header", ("countdown", "any other name"), DROPPED,
         "nobody reads it (a countdown arrives as an eta)", probe="x"),
    Part("body", ("args", "kwargs"), ANYONE, "the task's arguments; shape checked for all",
         proof="tests/integration/test_malformed_messages.py"),
    Part("body", ("embed callbacks", "embed errbacks", "embed chain"), REFUSED,
         "follow-up work published by the receiver, as the receiver",
         probe=[SIGNATURE], outcome="not-allowed"),
    Part("body", ("embed chord",), REFUSED, "the chord's callback, published by the receiver",
         probe=SIGNATURE, outcome="not-allowed"),
    Part("body", ("embed, any other key",), NOBODY,
         "overwrites the request (`request.update(**embed)`)", probe=True,
         outcome="malformed-body"),
    Part("body", ("protocol 1 (no task header, the task named in a JSON object)",), NOBODY,
         "Celery's protocol 1 path skips every check; on an events queue such a body is read"
         " as a plain envelope", probe=True, outcome="protocol-1", on_events="malformed-body"),
)  # fmt: skip

HEADERS: dict[str, Part] = {n: p for p in PARTS if p.where == "header" for n in p.names}


def asks(name: str, value: Any) -> bool:
    """Whether a header from someone other than the service asks for something."""
    part = HEADERS.get(name)
    if part is None:
        return False
    return part.others == REFUSED or (part.others == DEFAULT_ONLY and not part.harmless(value))


def kept(name: str) -> bool:
    """Whether a header from someone other than the service reaches the task."""
    part = HEADERS.get(name)
    return part is not None and part.others in (ANYONE, DEFAULT_ONLY)


def refusals(headers: dict[str, Any], embed: dict[str, Any] | None) -> list[str]:
    """What a message from someone other than the service asks for, by name."""
    asked = [repr(name) for name, value in headers.items() if asks(name, value)]
    return asked + [f"embed {name!r}" for name, value in (embed or {}).items() if value]


def markdown() -> str:
    """The README's table."""
    rows = ["| part | names | from anyone but the service itself | why / proof |",
            "|---|---|---|---|"]  # fmt: skip
    for part in PARTS:
        names = ", ".join(f"`{n}`" for n in part.names)
        proof = part.proof or "test_trust_table.py"
        outcome = part.others if part.outcome == "runs" else f"{part.others}: `{part.outcome}`"
        outcome += f" (on events: `{part.on_events}`)" if part.on_events else ""
        rows.append(f"| {part.where} | {names} | {outcome} | {part.why} ({proof}) |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
