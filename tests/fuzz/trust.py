"""Hypothesis strategies over the trust boundary: every row of ``shared.worker.trust.PARTS`` (set to
its default, its probe or anything an AMQP table holds), the embed and protocol 1, sent as
another service (a ``notifier.send_email`` command it may send) or as an upstream (a
``user.signed_up`` event it may publish).

Every message asks for one e-mail its publisher may ask for, to its own address
(``Attempt.to``); follow-up work names ``EVIL``, which no e-mail may ever reach. A message
that asks for anything the table refuses must not run (``Attempt.asks``).
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from shared.worker.trust import EMBED, HEADERS, PARTS, SIGNATURE, refusals
from tests.fuzz.messages import amqp_values

EVIL = "evil.example"
ROUTES = ("another service", "upstream")
DROP = object()  # a header or property left out


@dataclass(eq=False)
class Attempt:
    route: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    to: str
    protocol_1: bool = False
    asks: bool = False
    message_id: str = field(default_factory=lambda: f"trust-{uuid.uuid4()}")


def _follow_up() -> dict[str, Any]:
    kwargs = {"to": f"{uuid.uuid4().hex[:8]}@{EVIL}", "subject": "pwned", "body": "x"}
    return {**SIGNATURE, "task": "notifier.send_email", "kwargs": kwargs}


def _values(part: Any) -> st.SearchStrategy:
    """A header or property value: its probe, a harmless default, or anything."""
    probe = st.builds(part.probe) if callable(part.probe) else st.just(part.probe)
    defaults = st.sampled_from([None, 0, False, [None, None], {}, []]).filter(part.harmless)
    return st.one_of(probe, defaults, amqp_values)


HEADER_NAMES = sorted(HEADERS) + ["x-anything"]
PROPERTY_PROBES = {n: p for p in PARTS if p.where == "property" and p.probe is not None
                   for n in p.names if n != "user_id"}  # fmt: skip


@st.composite
def embeds(draw: Any) -> dict[str, Any]:
    """Celery's own empty embed most often; else follow-up work, or a key Celery lacks."""
    kind = draw(st.sampled_from(["empty", "defaults", "follow-up", "unknown"]))
    if kind == "empty":
        return {}
    if kind == "unknown":
        return {draw(st.sampled_from(["hostname", "is_eager", "args", "id"])): "x"}
    embed = dict.fromkeys(EMBED)
    if kind == "follow-up":
        name = draw(st.sampled_from(EMBED))
        embed[name] = _follow_up() if name == "chord" else [_follow_up()]
    return embed


@st.composite
def attempts(draw: Any) -> Attempt:
    route = draw(st.sampled_from(ROUTES))
    to = f"trust-{uuid.uuid4().hex[:10]}@example.com"
    if route == "upstream":
        event = {"id": str(uuid.uuid4()), "type": "user.signed_up", "version": 1,
                 "occurred_at": "2026-11-25T00:00:00Z", "source": "fuzz",
                 "payload": {"user_id": str(uuid.uuid4()), "email": to, "name": "F"}}  # fmt: skip
        task, task_id, kwargs = "user.signed_up", event["id"], {"event": event}
    else:
        task, task_id = "notifier.send_email", str(uuid.uuid4())
        kwargs = {"to": to, "subject": "s", "body": "b"}
    headers: dict[str, Any] = {"task": task, "id": task_id}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=3, unique=True)):
        part = HEADERS.get(name)
        value = draw(_values(part) if part is not None and part.probe is not None else amqp_values)
        headers[name] = value.replace("{id}", task_id) if isinstance(value, str) else value
    properties = {"content_type": "application/json", "content_encoding": "utf-8"}
    for name in draw(st.lists(st.sampled_from(sorted(PROPERTY_PROBES)), max_size=2, unique=True)):
        properties[name] = PROPERTY_PROBES[name].probe
    embed = draw(embeds())
    if draw(st.integers(0, 9)) == 9:  # protocol 1: the task and its options in the body
        body = {"task": task, "id": task_id, "args": [], "kwargs": kwargs, **embed}
        return Attempt(route, json.dumps(body).encode(), {}, properties, to, protocol_1=True)
    body = json.dumps([[], kwargs, embed]).encode()
    return Attempt(route, body, headers, properties, to, asks=_asks(headers, embed))


def _asks(headers: dict[str, Any], embed: dict[str, Any]) -> bool:
    """What the table refuses from anyone but the service (an embed key Celery does not
    define, or a value the table cannot even judge, is malformed: not run either)."""
    try:
        return bool(refusals(headers, embed)) or bool(set(embed) - set(EMBED))
    except TypeError:
        return True
