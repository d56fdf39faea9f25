"""Hypothesis strategies for what a publisher that is not Celery may put on the wire.

A ``Published`` message is one AMQP publish: an entry point (``events`` with a subscribed,
another or an unknown event type; a service's exchange with its command names, its
internal task names, another service's task names, Celery's own), a body, properties and
headers. The valid shapes are drawn as often as the broken ones, so every mutation lands
on a message that would otherwise be handled, and the shrinker can walk a failure back
to the one field that breaks it.
"""

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from shared.core.topology import SERVICES
from tests.fuzz.tables import raw_properties

SUBSCRIBED = sorted({t for topo in SERVICES.values() for t in topo.subscribes})
COMMANDS = ["notifier.send_email", "notifier.send_sms", "signup.user_stats",
            "reports.generate_report"]  # fmt: skip
INTERNAL = [
    "notifier.send_welcome_email", "notifier.notify_admins_of_signup",
    "notifier.send_report_summary", "reports.record_signup", "reports.record_notification_sent",
    "reports.record_notification_failed", "reports.add", "reports.step1", "reports.sum_results",
    "reports.collect", "celery.backend_cleanup", "celery.chord_unlock", "celery.group",
    "celery.chain", "celery.chord", "celery.map", "celery.starmap", "celery.chunks",
    "celery.accumulate",
]  # fmt: skip
TASK_NAMES = SUBSCRIBED + COMMANDS + INTERNAL + ["notification.unknown", "nope", ""]
#: Headers Celery's worker reads (plus one kombu reads: ``compression``).
CELERY_HEADERS = ["task", "id", "retries", "eta", "expires", "countdown", "timelimit", "group",
                  "group_index", "chord", "root_id", "parent_id", "argsrepr", "kwargsrepr",
                  "shadow", "origin", "lang", "stamps", "stamped_headers", "ignore_result",
                  "replaced_task_nesting", "compression"]  # fmt: skip
INT64 = 2**63 - 1
BIG_BODY = 5 * 1024 * 1024


@dataclass(eq=False)
class Published:
    """One publish, as the fuzz ledger tracks it; ``message_id`` tags every copy of it."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] | None
    properties: dict[str, Any]
    message_id: str = field(default_factory=lambda: Published.fresh_id())
    #: Property fields published as these bytes instead (``tests.fuzz.tables``).
    raw: dict[str, bytes] = field(default_factory=dict)

    @staticmethod
    def fresh_id() -> str:
        return f"fuzz-{uuid.uuid4()}"

    def __hash__(self) -> int:
        return hash(self.message_id)

    @property
    def task_id(self) -> str | None:
        value = (self.headers or {}).get("id")
        return value if isinstance(value, str) and value else None

    @property
    def id_header(self) -> Any:
        """The ``id`` header whatever its type: what a replayed copy is found by."""
        return (self.headers or {}).get("id")

    def __repr__(self) -> str:  # what a failure prints: everything needed to publish it again
        body = (
            self.body
            if len(self.body) <= 600
            else self.body[:600] + b"...(%d bytes)" % len(self.body)
        )
        headers = {k: (v if len(repr(v)) < 300 else f"{repr(v)[:300]}...") for k, v in
                   (self.headers or {}).items()} if self.headers is not None else None  # fmt: skip
        return (
            f"Published(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"body={body!r}, headers={headers!r}, properties={self.properties!r}"
            + (f", raw={ {k: v[:300] for k, v in self.raw.items()}!r})" if self.raw else ")")
        )


# -- values ------------------------------------------------------------------------------

short_text = st.text(max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-INT64, INT64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=12,
)
#: What an AMQP table can carry (py-amqp encodes these); huge strings included.
huge_text = st.integers(1000, 60_000).map(lambda n: "x" * n)
amqp_values = st.recursive(
    st.none() | st.booleans() | st.integers(-INT64, INT64) | st.floats(allow_nan=False)
    | short_text | huge_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


times = st.one_of(
    st.integers(-86_400 * 400, 5).map(lambda s: _iso(timedelta(seconds=s))),
    st.integers(86_400, 86_400 * 400).map(lambda s: _iso(timedelta(seconds=s))),
    st.sampled_from(["", "now", "2026-13-45T99:99:99", "0", "tomorrow", "1e309"]),
    amqp_values,
)
header_values = {
    "retries": st.integers(-5, 20) | st.integers(-INT64, INT64) | amqp_values,
    "eta": times,
    "expires": times,
    "countdown": st.integers(-10, 10**9) | amqp_values,
    "timelimit": st.lists(st.none() | st.floats(-1, 5) | st.integers(-1, 5), max_size=3)
    | amqp_values,
    "compression": st.sampled_from(
        ["application/x-gzip", "zlib", "bzip2", "lzma", "brotli", "zstd", "garbage", ""]
    )
    | amqp_values,  # fmt: skip
    "task": st.sampled_from(TASK_NAMES) | amqp_values,
    "stamps": st.dictionaries(short_text, amqp_values, max_size=3) | amqp_values,
}


@st.composite
def headers(draw, task: str) -> dict[str, Any] | None:
    """Celery's two required headers, then a few set to anything, dropped, or invented."""
    if draw(st.integers(0, 40)) == 0:
        return None
    result: dict[str, Any] = {"task": task, "id": str(uuid.uuid4())}
    for name in draw(st.lists(st.sampled_from(CELERY_HEADERS), max_size=4, unique=True)):
        action = draw(st.sampled_from(["set", "set", "drop", "null"]))
        if action == "drop":
            result.pop(name, None)
        elif action == "null":
            result[name] = None
        else:
            result[name] = draw(header_values.get(name, amqp_values))
    for name in draw(st.lists(short_text.filter(bool), max_size=2)):
        result[f"x-{name}" if draw(st.booleans()) else name] = draw(amqp_values)
    return result


# -- bodies ------------------------------------------------------------------------------

user_payload = st.fixed_dictionaries(
    {
        "user_id": st.uuids().map(str),
        "email": st.sampled_from(["fuzz@example.com", "ünï@example.com", "a@b", "not-mail"]),
        "name": st.sampled_from(["Ada", "", "x" * 201, "Zoë"]),
    },
    optional={"phone": st.none() | st.sampled_from(["+821012345678", "x" * 40])},
)
notification_payload = st.fixed_dictionaries(
    {"delivery_id": short_text, "kind": st.just("welcome_email"),
     "channel": st.sampled_from(["email", "sms", "fax"]), "recipient": short_text},
    optional={"caused_by": st.none() | st.uuids().map(str), "error": st.none() | short_text},
)  # fmt: skip
report_payload = st.fixed_dictionaries(
    {"report_id": st.uuids().map(str), "kind": st.sampled_from(["daily", "weekly"]),
     "day": st.just("2026-11-25"),
     "summary": st.dictionaries(st.text(max_size=5), st.integers(0, 99), max_size=3)},
)  # fmt: skip
PAYLOADS = {"user.signed_up": user_payload, "report.generated": report_payload,
            "notification.sent": notification_payload,
            "notification.failed": notification_payload}  # fmt: skip
#: A few event ids shared by all draws: the same id with a different payload is a duplicate.
SHARED_IDS = [str(uuid.UUID(int=i + 1)) for i in range(3)]


@st.composite
def envelopes(draw, event_type: str) -> Any:
    """An event envelope: valid for its type, or wrong in one way a publisher gets it wrong."""
    env: dict[str, Any] = {
        "id": draw(st.uuids().map(str) | st.sampled_from(SHARED_IDS)),
        "type": event_type,
        "version": 1,
        "occurred_at": draw(times.filter(lambda t: isinstance(t, str))),
        "source": "fuzz",
        "payload": draw(PAYLOADS.get(event_type, json_values)),
    }
    mutation = draw(st.sampled_from(["none", "none", "version", "type", "drop", "extra", "any"]))
    if mutation == "version":
        env["version"] = draw(st.sampled_from([0, 2, "1", None, 1.5]))
    elif mutation == "type":
        env["type"] = draw(st.sampled_from(SUBSCRIBED + ["user.deleted"]))
    elif mutation == "drop":
        env.pop(draw(st.sampled_from(sorted(env))))
    elif mutation == "extra":
        env[draw(short_text)] = draw(json_values)
    elif mutation == "any":
        return draw(json_values)
    return env


COMMAND_KWARGS = {
    "notifier.send_email": st.fixed_dictionaries(
        {"to": st.just("cmd@example.com"), "subject": st.just("Hi"), "body": short_text}
    ),
    "notifier.send_sms": st.fixed_dictionaries(
        {"to": st.just("+821012345678"), "text": st.just("hi")}
    ),
    "signup.user_stats": st.fixed_dictionaries({}, optional={"days": st.integers(-1, 400)}),
    "reports.generate_report": st.fixed_dictionaries(
        {"kind": st.sampled_from(["daily", "weekly", "hourly"]), "day": st.just("2026-11-25")}
    ),
}  # fmt: skip
embeds = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "callbacks": st.none() | st.lists(st.dictionaries(short_text, json_values, max_size=2),
                                          max_size=2) | json_values,
        "errbacks": st.none() | st.lists(st.dictionaries(short_text, json_values, max_size=2),
                                         max_size=2),
        "chain": st.none() | st.lists(st.dictionaries(short_text, json_values, max_size=2),
                                      max_size=2),
        "chord": st.none() | st.dictionaries(short_text, json_values, max_size=2),
    },
)  # fmt: skip


@st.composite
def task_bodies(draw, task: str) -> Any:
    """``[args, kwargs, embed]`` for ``task``, mostly right, sometimes not."""
    if task in PAYLOADS or task.startswith("notifier.send_w") or task.startswith("reports.record"):
        event_type = "report.generated" if "report_summary" in task else "user.signed_up"
        event_type = task if task in PAYLOADS else event_type
        args, kwargs = [], {"event": draw(envelopes(event_type))}
    elif task in COMMAND_KWARGS:
        args, kwargs = [], draw(COMMAND_KWARGS[task])
    elif task in ("reports.add", "reports.step1"):
        args, kwargs = draw(st.lists(st.integers(-5, 5), min_size=1, max_size=2)), {}
    else:
        args, kwargs = draw(st.lists(json_values, max_size=2)), {}
    if draw(st.integers(0, 3)) == 0:
        args = draw(json_values)
    if draw(st.integers(0, 3)) == 0:
        kwargs = draw(json_values)
    return [args, kwargs, draw(embeds | st.just({}))]


@st.composite
def bodies(draw, task: str) -> bytes:
    shape = draw(st.sampled_from(["task"] * 5 + ["json", "bytes", "empty", "truncated", "huge"]))
    if shape == "huge":
        if draw(st.integers(0, 9)):  # one in ten of these is 5 MiB: a few per 300 messages
            shape = "task"
        else:
            return json.dumps([[], {"event": "x" * BIG_BODY}, {}]).encode()
    if shape == "task":
        return json.dumps(draw(task_bodies(task))).encode()
    if shape == "json":
        return json.dumps(draw(json_values)).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=64) | st.just(b"\xff\xfe[") | st.just(b"\x80abc"))
    if shape == "truncated":
        return json.dumps(draw(task_bodies(task))).encode()[:-1]
    return b""


# -- properties and entry points ---------------------------------------------------------

CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/json",
                 "application/x-python-serialize", "application/x-yaml", "application/data",
                 "text/plain", "APPLICATION/JSON", ""]  # fmt: skip
ENCODINGS = [None, "utf-8", "utf8", "UTF-8", "binary", "latin-1", "utf-16", "gzip", "bogus", ""]


@st.composite
def properties(draw) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if draw(st.integers(0, 2)):  # mostly the documented pair
        props.update(content_type="application/json", content_encoding="utf-8")
    else:
        for name, choices in (("content_type", CONTENT_TYPES), ("content_encoding", ENCODINGS)):
            value = draw(st.sampled_from(choices))
            if value is not None:
                props[name] = value
    optional = {
        "priority": st.integers(0, 255),
        "expiration": st.sampled_from(["0", "1", "50", "60000", "86400000"]),
        "correlation_id": st.text(max_size=60),
        "reply_to": st.text(max_size=60),
        "type": short_text,
        "app_id": short_text,
        "timestamp": st.integers(0, 2**32),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
        props[name] = draw(optional[name])
    return props


def _entry_points() -> list[tuple[str, str, list[str]]]:
    """(exchange, routing key, task names likely there): every way into a service."""
    points = [("events", t, [t]) for t in SUBSCRIBED]
    points.append(("events", "user.deleted", ["user.deleted", "user.signed_up"]))
    for name, topo in SERVICES.items():
        own = [t for t in COMMANDS + INTERNAL if t.startswith(f"{name}.")] or COMMANDS
        points.append((name, topo.tasks_queue, own + COMMANDS))
        if topo.subscribes:
            points.append((name, topo.events_queue, list(topo.subscribes)))
    return points


ENTRY_POINTS = _entry_points()
#: The entry points some queue is bound to (``user.deleted`` has no subscriber).
ROUTED = [point for point in ENTRY_POINTS if point[1] != "user.deleted"]


@st.composite
def messages(draw, routed: bool = False) -> Published:
    """One message to one entry point (``routed``: only to one a queue is bound to)."""
    exchange, routing_key, likely = draw(st.sampled_from(ROUTED if routed else ENTRY_POINTS))
    if exchange == "events" and not routed and draw(st.integers(0, 9)) == 0:
        routing_key = draw(st.text("abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=30))
    task = draw(st.sampled_from(likely) | st.sampled_from(TASK_NAMES))
    drawn = draw(headers(task))
    return Published(
        exchange=exchange,
        routing_key=routing_key,
        body=draw(bodies(task)),
        headers=drawn,
        properties=draw(properties()),
        raw=draw(raw_properties(drawn)) if draw(st.integers(0, 9)) == 9 else {},
    )


def poisoned() -> st.SearchStrategy[Published]:
    """Messages of ``messages()`` with property bytes a client may not decode (``tables``),
    each to a bound queue: an unrouted one would never meet a consumer's decoder."""
    return messages(routed=True).flatmap(
        lambda m: raw_properties(m.headers).map(lambda raw: replace(m, raw=raw))
    )


def good_signup(email: str) -> Published:
    """The next good event: what must still be handled after everything else."""
    event = {"id": str(uuid.uuid4()), "type": "user.signed_up", "version": 1,
             "occurred_at": "2026-11-25T00:00:00Z", "source": "fuzz",
             "payload": {"user_id": str(uuid.uuid4()), "email": email, "name": "Good"}}  # fmt: skip
    return Published(
        "events", "user.signed_up", json.dumps([[], {"event": event}, {}]).encode(),
        {"task": "user.signed_up", "id": event["id"]},
        {"content_type": "application/json", "content_encoding": "utf-8"},
    )  # fmt: skip
