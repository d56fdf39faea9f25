"""Messages whose properties py-amqp cannot decode are delivered, marked, not raised.

py-amqp decodes a message's properties (its header table above all) when the content
header frame arrives, in the consumer's thread, before kombu, Celery or the platform sees
anything. RabbitMQ forwards properties it accepts but py-amqp cannot read: a header table
nested past Python's recursion limit (``RecursionError``), a property string that is not
UTF-8 (``UnicodeDecodeError``), a header timestamp past year 9999 (``ValueError``), and
from other brokers an unknown field type or a truncated table. The exception escapes the
frame handler with its per-channel state half-updated (a partial message, the next frame
type expected): Celery calls it an "Unrecoverable error" and the worker exits, and every
frame read afterwards on that connection (its shutdown reads some) is assigned to the
wrong message, so the next valid message arrives glued to the poisoned one's delivery.

``install()`` makes the properties decoder total: when py-amqp's own decoder raises,
the fields that can be read are read one by one (each has a length on the wire), the
others are left out, and the message is delivered with ``UNDECODABLE`` in its properties,
a key no wire can set. Frame state then advances as for any message. The worker's
consumer (``shared.deadletter``) dead-letters such a message as ``undecodable-frame``,
keeping its body, the properties that could be read and the raw bytes (``note``); the
``eventful dlq`` tools read one that reached a DLQ natively and, moving it, keep the same
(``readable_properties``), so the next reader of that DLQ is not at risk.
"""

import base64
from typing import Any

from amqp.basic_message import Message
from amqp.serialization import loads
from amqp.spec import Basic

from shared.wire import MalformedMessage

#: The properties key that marks a message whose properties py-amqp could not decode.
UNDECODABLE = "x-undecodable-properties"
#: Raw property bytes kept in a dead letter's headers (base64): the frame must still fit.
RAW_LIMIT = 48 * 1024
_SIZES = {"o": 1, "L": 8}
_decode = Message._load_properties


def install() -> None:
    """Make every py-amqp message decode its properties totally (idempotent, process-wide)."""
    Message._load_properties = _load_properties


def _load_properties(self: Message, class_id: int, buf: Any, offset: int) -> int:
    try:
        return _decode(self, class_id, buf, offset)
    except Exception as exc:  # RecursionError, UnicodeDecodeError, struct.error, ...
        raw = bytes(buf[offset:])
        props = _salvage(buf, offset) if class_id == Basic.CLASS_ID else {}
        props[UNDECODABLE] = {"error": f"{type(exc).__name__}: {exc}"[:500], "raw": raw}
        self.properties = props
        return len(buf)


def _salvage(buf: Any, offset: int) -> dict[str, Any]:
    """The basic properties py-amqp can decode one at a time; the others skipped by their
    length on the wire, and everything after a field whose length runs past the frame."""
    flags = int.from_bytes(buf[offset : offset + 2], "big")
    offset += 2
    props: dict[str, Any] = {}
    for bit, (name, kind) in zip(range(15, 0, -1), Message.PROPERTIES, strict=False):
        if not flags & 1 << bit:
            continue
        end = offset + _field_size(kind, buf, offset)
        if end > len(buf):
            break
        try:
            (props[name],), _ = loads(kind, buf, offset)
        except Exception:
            props.pop(name, None)
        offset = end
    return props


def _field_size(kind: str, buf: Any, offset: int) -> int:
    """Bytes the field at ``offset`` takes: fixed, or its length prefix (1 or 4 bytes) and
    what it counts; past the frame when the prefix itself is cut off."""
    if kind in _SIZES:
        return _SIZES[kind]
    prefix = 1 if kind == "s" else 4
    if offset + prefix > len(buf):
        return len(buf)
    return prefix + int.from_bytes(buf[offset : offset + prefix], "big")


def undecodable(message: Any) -> dict[str, Any] | None:
    """The decoding failure of ``message`` (py-amqp's or kombu's), None if it decoded."""
    return (getattr(message, "properties", None) or {}).get(UNDECODABLE)


def check_properties(message: Any) -> None:
    """Refuse a message whose properties could not be decoded, as ``undecodable-frame``."""
    failure = undecodable(message)
    if failure is not None:
        raise MalformedMessage("undecodable-frame", f"undecodable properties: {failure['error']}")


def note(message: Any) -> dict[str, str]:
    """What a dead letter keeps of properties that could not be decoded: the error and the
    raw bytes (base64, the first ``RAW_LIMIT``), so an operator can see what was sent."""
    failure = undecodable(message)
    if failure is None:
        return {}
    raw = failure["raw"]
    return {
        UNDECODABLE: base64.b64encode(raw[:RAW_LIMIT]).decode(),
        f"{UNDECODABLE}-length": str(len(raw)),
        f"{UNDECODABLE}-error": failure["error"],
    }


def readable_properties(message: Any) -> dict[str, Any]:
    """``message``'s properties as a copy can carry them: the decoded ones, and for the part
    py-amqp could not decode, ``note``'s headers in its place."""
    properties = dict(message.properties)
    if properties.pop(UNDECODABLE, None) is not None:
        headers = properties.get("application_headers") or {}
        properties["application_headers"] = {**headers, **note(message)}
    return properties
