"""Events from publishers that do not speak Celery: CloudEvents 1.0 and the plain envelope.

An upstream in any language publishes to ``events`` in one of four forms (README,
"Publishing events from another service"):

- Celery's protocol 2 (``task``/``id`` headers, ``[[], {"event": ENVELOPE}, {}]``): as is;
- CloudEvents, structured mode: ``content_type: application/cloudevents+json``, the event
  as the body (its ``data`` the payload);
- CloudEvents, binary mode (the AMQP binding): attributes as ``cloudEvents:``/
  ``cloudEvents_``-prefixed headers, the payload as an ``application/json`` body;
- the plain envelope as an ``application/json`` body, with no ``task`` header.

``translate`` rewrites the last three, in place and before the worker's own checks, into
the protocol-2 message the event type's entry task reads (task = the type, id = the event
id), so the same deduplication and handlers apply. The contract version comes from the
``dataversion`` extension attribute or a ``dataschema`` ending in the version (``.../v2``).
The message as it arrived is kept (``received``): a dead letter copies that, so the DLQ
shows what the publisher sent. Mapped by hand rather than with the ``cloudevents`` SDK:
the SDK has no AMQP binding, and the mapping is a handful of attributes. An upstream's
trace context rides along (``traceparent``/``tracestate``: the CloudEvents
distributed-tracing extension, or AMQP headers of those names), so its trace continues.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from shared.core.topology import EVENTS_EXCHANGE, ServiceTopology
from shared.core.tracing import TRACE_HEADERS
from shared.worker.wire import MalformedMessage

PREFIXES = ("cloudEvents:", "cloudEvents_")
STRUCTURED = "application/cloudevents+json"
REQUIRED = ("specversion", "id", "source", "type")
VERSION_IN_SCHEMA = re.compile(r"(?:^|[/:.#])v?(\d{1,6})(?:\.json)?$")


@dataclass(frozen=True)
class Received:
    """A message's body and properties as the publisher sent them."""

    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    content_encoding: str | None


def received(message: Any) -> Any:
    """The message as it arrived (``body``, ``headers``, ``content_type``/``_encoding``)."""
    return getattr(message, "_received", None) or message


def keep_received(message: Any) -> None:
    """Keep ``message`` as it arrived, before the first rewrite of it (a dead letter copies
    what the publisher sent)."""
    if received(message) is message:
        message._received = Received(
            message.body, dict(message.headers or {}), message.content_type,
            message.content_encoding,
        )  # fmt: skip


def translated(message: Any, topo: ServiceTopology) -> dict[str, Any] | None:
    """The ``task`` and ``id`` headers a worker runs ``message`` by when it arrives on
    ``topo``'s events queue, if it is a CloudEvent or a plain envelope we read (the event's
    type and id), else None: what a dead letter an upstream sent is replayed by."""
    properties = message.properties or {}
    arrived = SimpleNamespace(
        body=message.body,
        headers=dict(message.headers or {}),
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        delivery_info={"exchange": topo.name, "routing_key": topo.events_queue},
    )
    try:
        translate(arrived, topo)
    except MalformedMessage:
        return None
    return arrived.headers if received(arrived) is not arrived else None


def translate(message: Any, topo: ServiceTopology) -> None:
    """Turn a CloudEvent or plain envelope on ``topo``'s events queue into protocol 2.

    Anything else is left to the worker's checks. ``MalformedMessage`` names what is wrong.
    """
    headers = message.headers
    if not isinstance(headers, dict) or "task" in headers:
        return
    delivery = message.delivery_info or {}
    exchange, routing_key = delivery.get("exchange") or "", delivery.get("routing_key") or ""
    if topo.queue_for(exchange, routing_key) != topo.events_queue:
        return
    read = _envelope(message, headers)
    if read is None:
        return
    attributes, event = read
    if exchange == EVENTS_EXCHANGE and event["type"] != routing_key:
        raise MalformedMessage(
            "routing-key-mismatch",
            f"type {event['type']!r} published with routing key {routing_key!r}"[:300],
        )
    keep_received(message)
    message.body = json.dumps([[], {"event": event}, {}]).encode()
    message.headers = {"task": event["type"], "id": event["id"], **_trace(attributes, headers)}
    message.content_type, message.content_encoding = "application/json", "utf-8"
    message._decoded_cache = None


def _envelope(message: Any, headers: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
    """The CloudEvent attributes (none for a plain envelope) and the envelope of ``message``,
    or None when it is neither a CloudEvent nor a plain envelope."""
    media = _media_type(message.content_type)
    if media.startswith("application/cloudevents"):
        if media != STRUCTURED:
            raise _bad(f"content type {media!r}: only {STRUCTURED} (structured mode) is read")
        attributes = _json_object(message.body, "a CloudEvent")
        event = _from_attributes(attributes, structured=True)
    elif any(k.startswith(PREFIXES) for k in headers):
        cut = len(PREFIXES[0])  # both prefixes are as long
        attributes = {k[cut:]: v for k, v in headers.items() if k.startswith(PREFIXES)}
        if not _is_json(media):
            raise _bad(f"binary mode data must be application/json, got {media or 'none'!r}")
        attributes["data"] = _json(message.body)
        event = _from_attributes(attributes, structured=False)
    elif media == "application/json":
        attributes, event = {}, _json(message.body)
        if not isinstance(event, dict):
            return None  # not an envelope: the worker's checks say what it is
        if not all(isinstance(event.get(k), str) and event[k] for k in ("id", "type")):
            raise MalformedMessage(
                "malformed-body", "a plain envelope needs string 'id' and 'type' (README)"
            )
    else:
        return None
    return attributes, event


def _trace(attributes: dict[str, Any], headers: dict[str, Any]) -> dict[str, str]:
    """The W3C trace context the upstream sent, to continue its trace: the CloudEvents
    distributed-tracing extension's ``traceparent``/``tracestate`` attributes, else the
    same names as AMQP headers (a plain envelope). Strings of a sane length only; a value
    the propagator cannot parse is ignored by it."""
    found = {}
    for key in TRACE_HEADERS:
        value = attributes.get(key)
        value = value if isinstance(value, str) else headers.get(key)
        if isinstance(value, str) and 0 < len(value) <= 512:
            found[key] = value
    return found


def _from_attributes(attributes: dict[str, Any], *, structured: bool) -> dict[str, Any]:
    """The envelope of a CloudEvent's attributes (binary mode: ``data`` already decoded)."""
    missing = [a for a in REQUIRED if not isinstance(attributes.get(a), str) or not attributes[a]]
    if missing:
        raise _bad(f"required attribute(s) missing or not strings: {', '.join(missing)}")
    if attributes["specversion"] != "1.0":
        raise _bad(f"specversion {attributes['specversion']!r}: only 1.0 is read"[:300])
    if structured:
        media = _media_type(attributes.get("datacontenttype") or "application/json")
        if not _is_json(media) or "data_base64" in attributes:
            raise _bad(f"data must be JSON (datacontenttype application/json), got {media!r}")
    event = {
        "id": attributes["id"],
        "type": attributes["type"],
        "source": attributes["source"],
        "payload": attributes.get("data"),
    }
    if (time := attributes.get("time")) is not None:
        event["occurred_at"] = time.isoformat() if isinstance(time, datetime) else time
    if (version := _version(attributes)) is not None:
        event["version"] = version
    return event


def _version(attributes: dict[str, Any]) -> int | None:
    """``dataversion`` (an integer, or its canonical string), else from ``dataschema``."""
    declared = attributes.get("dataversion")
    if declared is not None:
        if type(declared) is int or (isinstance(declared, str) and declared.isdigit()):
            return int(declared)
        raise _bad(f"dataversion must be an integer, got {declared!r}"[:300])
    schema = attributes.get("dataschema")
    if schema is None:
        return None
    match = VERSION_IN_SCHEMA.search(schema) if isinstance(schema, str) else None
    if match is None:
        raise _bad(f"dataschema {schema!r} does not end in a version (.../v1)"[:300])
    return int(match.group(1))


def _bad(detail: str) -> MalformedMessage:
    return MalformedMessage("malformed-cloudevent", f"not a CloudEvent 1.0 we read: {detail}")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _json(body: Any) -> Any:
    try:
        return json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage("undecodable-body", f"body is not UTF-8 JSON: {exc}"[:300]) from None


def _json_object(body: Any, what: str) -> dict[str, Any]:
    value = _json(body)
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
