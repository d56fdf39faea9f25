"""A publisher that puts any bytes in a message's properties: what a client in another
language (or a hostile one) can send, and RabbitMQ forwards, but py-amqp cannot decode.

py-amqp's frame writer asks the message for its serialized properties
(``_serialize_properties``); ``RawMessage`` answers with bytes built here, field by field,
where any field may be given as raw bytes instead of a value.
"""

import struct
from typing import Any

import amqp
from amqp.serialization import dumps
from kombu import Connection

#: The basic class's properties in wire order, with their AMQP types (py-amqp's own list).
FIELDS: list[tuple[str, str]] = amqp.Message.PROPERTIES


class RawMessage(amqp.Message):
    """A message whose properties are exactly ``raw`` on the wire."""

    def __init__(self, body: bytes, raw: bytes) -> None:
        super().__init__(body)
        self.raw = raw

    def _serialize_properties(self) -> bytes:
        return self.raw


def encode(properties: dict[str, Any], raw: dict[str, bytes] | None = None) -> bytes:
    """Property flags and list: ``properties`` encoded as py-amqp would, and each field in
    ``raw`` (e.g. ``application_headers``) as the bytes given, unchecked."""
    raw = raw or {}
    flags, out = 0, b""
    for bit, (name, kind) in zip(range(15, 0, -1), FIELDS, strict=False):
        if name in raw:
            flags, out = flags | 1 << bit, out + raw[name]
        elif properties.get(name) is not None:
            flags, out = flags | 1 << bit, out + dumps(kind.encode(), [properties[name]])
    return struct.pack(">H", flags) + out


def table(items: list[tuple[bytes, bytes]]) -> bytes:
    """A field table from (key, typed value bytes) pairs: the value starts with its type."""
    content = b"".join(bytes([len(key)]) + key + value for key, value in items)
    return struct.pack(">I", len(content)) + content


def nested(depth: int, key: bytes = b"a") -> bytes:
    """A table holding a table holding ... ``depth`` levels down: py-amqp decodes it by
    recursion, one Python frame or two per level."""
    inner = table([])
    for _ in range(depth):
        inner = table([(key, b"F" + inner)])
    return inner


def shortstr(value: bytes) -> bytes:
    """A short string field as raw bytes (not necessarily UTF-8)."""
    return bytes([len(value)]) + value


def publish_properties(
    amqp_url: str, exchange: str, routing_key: str, body: bytes, raw: bytes
) -> None:
    """Publish ``body`` with ``raw`` as its properties, confirmed, as ``amqp_url``'s user."""
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(
            RawMessage(body, raw), exchange=exchange, routing_key=routing_key
        )
