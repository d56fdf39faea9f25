"""py-amqp's frame handler with the guard (``shared.worker.frames``): whatever the properties
bytes, the content header never raises, a message whose properties py-amqp cannot decode
is delivered marked, with what could be read, and the next message on the channel is
delivered as itself (its own method frame, delivery tag and properties).

Frames go straight into py-amqp's own ``frame_handler``, as the transport hands them over,
including what RabbitMQ refuses to forward (unknown field types, truncated tables), which
a client connected to another broker or a proxy could still receive.
"""

import struct
from typing import Any

import pytest
from amqp.method_framing import frame_handler
from amqp.serialization import GenericContent, dumps, loads
from amqp.spec import Basic
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.worker.frames import UNDECODABLE, install
from tests.fuzz.tables import raw_properties
from tests.raw_properties import encode, nested, shortstr, table

install()


class Received:
    """What the frame handler hands to the connection: (method args, message) per message."""

    def __init__(self) -> None:
        self.bytes_recv = 0
        self.messages: list[tuple[bytes, Any]] = []
        self.on_frame = frame_handler(self, self.callback)

    def callback(self, channel: int, method: tuple, args: bytes, message: Any) -> None:
        self.messages.append((args, message))

    def deliver(self, tag: int, properties: bytes, body: bytes) -> None:
        """A Basic.Deliver as RabbitMQ frames it: method, content header, body."""
        args = dumps("sLbss", [f"ctag-{tag}", tag, False, "events", "user.signed_up"])
        self.on_frame((1, 1, struct.pack(">HH", *Basic.Deliver) + args))
        self.on_frame((2, 1, struct.pack(">HHQ", Basic.CLASS_ID, 0, len(body)) + properties))
        if body:
            self.on_frame((3, 1, body))


def valid() -> bytes:
    return encode({"message_id": "valid", "application_headers": {"task": "t", "id": "1"}})


def check_next_is_itself(received: Received) -> None:
    received.deliver(2, valid(), b"second")
    args, second = received.messages[-1]
    assert loads("sL", args, 4)[0] == ["ctag-2", 2]  # its own Basic.Deliver
    assert second.body == b"second"
    assert second.properties == {"message_id": "valid",
                                 "application_headers": {"task": "t", "id": "1"}}  # fmt: skip


KEEP = (b"keep", b"t\x01")  # a header item that decodes: {"keep": True}
CASES = {
    # case: (raw property fields, the error, the headers kept)
    "nested 1,200 deep": ({"application_headers": nested(1200)}, "RecursionError", {}),
    "nested 500 deep: decoded, not encodable again": ({"application_headers": nested(500)},
                                                      "deeper than 100", {}),
    "unknown field type": ({"application_headers": table([KEEP, (b"k", b"Z"), KEEP])},
                           "FrameSyntaxError", {"keep": True}),
    "truncated table": ({"application_headers": struct.pack(">I", 90) + b"\x01kS\x00\x00"},
                        "error", None),
    "string not UTF-8": ({"content_type": shortstr(b"\xff\xfe")}, "UnicodeDecodeError", None),
    "timestamp past 9999": ({"application_headers": table([(b"t", b"T" + b"\xff" * 8), KEEP])},
                            "Error", {"keep": True}),
    "name not UTF-8": ({"application_headers": table([KEEP, (b"\xff", b"V")])}, "ValueError",
                       {"keep": True}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_undecodable_properties_are_delivered_marked_with_what_could_be_read(case: str):
    raw, error, kept = CASES[case]
    received = Received()
    received.deliver(1, encode({"message_id": "poison", "type": "kept"}, raw), b"first")
    _args, first = received.messages[-1]
    assert first.body == b"first"
    assert error in first.properties[UNDECODABLE]["error"]
    assert first.properties.get("application_headers") == kept
    if "truncated" not in case:  # a field whose length runs past the end ends the reading
        assert first.properties["message_id"] == "poison" and first.properties["type"] == "kept"
    check_next_is_itself(received)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_generated_property_bytes_never_raise_and_the_next_message_is_itself(data):
    headers = data.draw(st.none() | st.just({"task": "user.signed_up", "id": "x"}))
    raw = data.draw(raw_properties(headers, forwarded=False))
    received = Received()
    properties = encode({"message_id": "drawn"}, raw)
    received.deliver(1, properties, b"first")
    _args, first = received.messages[-1]
    assert first.body == b"first"
    if UNDECODABLE not in first.properties:  # decoded: as py-amqp alone decodes it
        alone = GenericContent()
        GenericContent._load_properties(alone, Basic.CLASS_ID, properties, 0)
        assert repr(alone.properties) == repr(first.properties)  # NaN is not NaN
    check_next_is_itself(received)
