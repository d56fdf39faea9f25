"""Messages whose properties py-amqp cannot decode are delivered, marked, not raised.

py-amqp decodes a message's properties (its header table above all) when the content
header frame arrives, in the consumer's thread, before kombu, Celery or the platform sees
anything. RabbitMQ forwards properties it accepts but py-amqp cannot read: a header table
nested past Python's recursion limit (``RecursionError``), a property string that is not
UTF-8 (``UnicodeDecodeError``), a header timestamp past year 9999 (``ValueError``), and
from other brokers an unknown field type or a truncated table. (A header name that is not
UTF-8 py-amqp hands over as bytes, and a table nested deeper than ``MAX_DEPTH`` it
decodes but cannot encode again: no reader can take them, so they count as undecodable.)

The exception escapes py-amqp's frame handler with its per-channel state half-updated (a
partial message, the frame type due next). Celery calls it an "Unrecoverable error" and
the worker exits; and every frame its shutdown still reads on that connection goes to the
wrong message: the next valid message arrives glued to the poisoned one's delivery (its
delivery tag) and is dead-lettered ``malformed-message`` by the dying worker.

``install()`` makes the properties decoder total: when py-amqp's own decoder raises,
the fields that can be read are read one by one (each has a length on the wire), the
others are left out, and the message is delivered with ``UNDECODABLE`` in its properties,
a key no wire can set. Frame state then advances as for any message. The worker's
consumer (``shared.worker.deadletter``) dead-letters such a message as ``undecodable-frame``,
keeping its body, the properties that could be read and the raw bytes (``note``); the
``eventful dlq`` tools read one that reached a DLQ natively and, moving it, keep the same
(``readable_properties``), so the next reader of that DLQ is not at risk.
"""

import base64
from typing import Any

from amqp.basic_message import Message
from amqp.serialization import _read_item, loads  # type: ignore[attr-defined]  # private
from amqp.spec import Basic

from shared.worker.wire import MalformedMessage

#: The properties key that marks a message whose properties py-amqp could not decode.
UNDECODABLE = "x-undecodable-properties"
#: Deepest header nesting accepted (RabbitMQ's own headers, ``x-death``, nest 3 deep).
MAX_DEPTH = 100
#: Raw property bytes kept in a dead letter's headers (base64): the frame must still fit.
RAW_LIMIT = 48 * 1024
#: Bytes of each property type that has no length prefix.
_PROPERTY_SIZES = {"o": 1, "L": 8}
#: Bytes after the type byte of each fixed-size field value py-amqp reads (``_read_item``).
_FIXED = {"b": 1, "B": 1, "s": 2, "U": 2, "u": 2, "I": 4, "i": 4, "L": 8, "l": 8, "f": 4,
          "d": 8, "D": 5, "t": 1, "T": 8, "V": 0}  # fmt: skip
_decode = Message._load_properties  # type: ignore[attr-defined]  # private to py-amqp


def install() -> None:
    """Make every py-amqp message decode its properties totally (idempotent, process-wide)."""
    Message._load_properties = _load_properties  # type: ignore[attr-defined]  # see _decode


def _load_properties(self: Message, class_id: int, buf: Any, offset: int) -> int:
    """py-amqp's decoding, which must not raise here: the frame handler would keep the
    half-read message as the channel's state. Failures become the ``UNDECODABLE`` mark."""
    try:
        end: int = _decode(self, class_id, buf, offset)
        _check_table(self.properties.get("application_headers"))
        return end
    except Exception as exc:  # RecursionError, UnicodeDecodeError, struct.error, ...
        raw = bytes(buf[offset:])
        props = _salvage(buf, offset) if class_id == Basic.CLASS_ID else {}
        props[UNDECODABLE] = {"error": f"{type(exc).__name__}: {exc}"[:500], "raw": raw}
        self.properties = props
        return len(buf)


def _salvage(buf: Any, offset: int) -> dict[str, Any]:
    """The basic properties py-amqp can decode, one at a time, and of the header table the
    items it can decode; the others skipped by their size on the wire, everything after
    one whose size runs past the frame (or that has an unknown type) left out."""
    flags = int.from_bytes(buf[offset : offset + 2], "big")
    offset += 2
    props: dict[str, Any] = {}
    for bit, (name, kind) in zip(range(15, 0, -1), Message.PROPERTIES, strict=False):
        if not flags & 1 << bit:
            continue
        size = _PROPERTY_SIZES.get(kind) or _counted(buf, offset, 1 if kind == "s" else 4)
        if offset + size > len(buf):
            break
        try:
            if kind == "F":
                props[name] = _table(buf, offset + 4, offset + size)
            else:
                props[name] = loads(kind, buf, offset)[0][0]
        except Exception:
            pass
        offset += size
    return props


def _table(buf: Any, offset: int, end: int) -> dict[str, Any]:
    """The items of the field table from ``offset`` to ``end`` that decode."""
    table = {}
    while offset < end:
        at = offset + 1 + buf[offset]  # the value, after the name
        after = at + _value_size(buf, at)
        if after > end:
            break
        try:
            value = _read_item(buf, at)[0]
            _check_table(value)
            table[bytes(buf[offset + 1 : at]).decode()] = value
        except Exception:
            pass
        offset = after
    return table


def _value_size(buf: Any, at: int) -> int:
    """Bytes of the typed field value at ``at``; past the frame if its type is unknown."""
    kind = chr(buf[at]) if at < len(buf) else ""
    if kind in _FIXED:
        return 1 + _FIXED[kind]
    return 1 + _counted(buf, at + 1, 4) if kind and kind in "SxFA" else len(buf) + 1


def _counted(buf: Any, offset: int, prefix: int) -> int:
    """A length prefix of ``prefix`` bytes at ``offset`` and the bytes it counts; past the
    frame when the prefix itself is cut off."""
    if offset + prefix > len(buf):
        return len(buf) + 1
    return prefix + int.from_bytes(buf[offset : offset + prefix], "big")


def _check_table(table: Any) -> None:
    """Refuse a table that decoded but that no reader can take: a name that is not UTF-8
    (py-amqp hands it over as bytes; ``dlq replay`` and ``dlq list --json`` failed on
    one), or nesting deeper than ``MAX_DEPTH`` (py-amqp's encoder recurses twice as deep
    as its decoder: the dead-letter copy of a table nested just below the recursion limit
    could not be published). Walked with a list, not by recursion."""
    pending = [(table, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"a header table nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if any(not isinstance(name, str) for name in value):
                raise ValueError(f"a header name is not UTF-8: {list(value)[:5]!r}"[:300])
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)


def undecodable(message: Any) -> dict[str, Any] | None:
    """Why ``message``'s properties could not be decoded (and their raw bytes), or None."""
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
