"""Hypothesis strategies for property bytes a client library may not decode.

py-amqp decodes a message's properties before anything else sees them; what it cannot
decode used to stop the worker. These draw them as bytes, so nothing on the publishing
side (py-amqp's encoder) limits them: field tables of every AMQP field type, values out of
range (timestamps, decimals), tables and arrays nested from one level to past the
recursion limit, wide and large tables, names that are not UTF-8, and property strings
that are not UTF-8. What RabbitMQ forwards (``forwarded``) goes to the workers
(``tests/integration/test_fuzz_edge.py``): each must end dead-lettered or handled. With
``forwarded`` False they also hold what RabbitMQ refuses at publish (unknown types, items
cut short or with a byte changed): decoded in process (``tests/unit/test_frames.py``),
where the guard must never raise.
"""

import struct
from typing import Any

from amqp.serialization import dumps
from hypothesis import strategies as st

#: Field types RabbitMQ parses, and so forwards, with how many value bytes follow the type.
#: It refuses a message with any other (its channel crashes, a crash report in its log:
#: the broker-side fuzz sends none). py-amqp reads them all.
FORWARDED = {"b": 1, "B": 1, "s": 2, "u": 2, "I": 4, "i": 4, "l": 8, "D": 5, "t": 1,
             "T": 8, "V": 0}  # fmt: skip
#: Types py-amqp reads that RabbitMQ does not (``U``, ``L``: py-amqp's own letters; floats
#: of any bit pattern, NaN included).
READ_ONLY = {"U": 2, "L": 8, "f": 4, "d": 8}
UNKNOWN = sorted(set(range(256)) - {ord(t) for t in [*FORWARDED, *READ_ONLY, *"SxFA"]})
#: Property strings a publisher may fill with any bytes (``expiration`` and ``user_id`` are
#: read by RabbitMQ, ``message_id`` is what the fuzz ledger tracks a message by).
SHORT_STRINGS = ["content_type", "content_encoding", "correlation_id", "reply_to", "type",
                 "app_id", "cluster_id"]  # fmt: skip


def _long(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _table(items: list[bytes]) -> bytes:
    return _long(b"".join(items))


def _fixed(types: dict[str, int]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(sorted(types)).flatmap(
        lambda t: st.binary(min_size=types[t], max_size=types[t]).map(lambda b: t.encode() + b)
    )


keys = st.binary(max_size=8).map(lambda k: bytes([len(k)]) + k)  # UTF-8 or not


def values(forwarded: bool) -> st.SearchStrategy[bytes]:
    """One typed field value: any type and bytes, or only what RabbitMQ forwards."""
    scalars = st.one_of(
        _fixed(FORWARDED),
        st.floats(allow_nan=False).map(lambda f: b"d" + struct.pack(">d", f)),
        st.binary(max_size=40).map(lambda b: b"S" + _long(b)),  # UTF-8 or not
        st.binary(max_size=40).map(lambda b: b"x" + _long(b)),
        st.integers(1_000, 60_000).map(lambda n: b"S" + _long(b"x" * n)),  # large
    )
    if not forwarded:
        scalars |= _fixed(READ_ONLY) | st.sampled_from(UNKNOWN).map(lambda t: bytes([t, 0]))
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4).map(lambda vs: b"A" + _long(b"".join(vs)))
            | st.lists(st.tuples(keys, inner), max_size=4).map(
                lambda kvs: b"F" + _table([k + v for k, v in kvs])
            )
        ),
        max_leaves=8,
    )


def nested_value(depth: int, kind: str) -> bytes:
    """A value ``depth`` tables (``F``) or arrays (``A``) deep: decoded by recursion."""
    value = b"V"
    for _ in range(depth):
        value = b"F" + _table([b"\x01a" + value]) if kind == "F" else b"A" + _long(value)
    return value


deep = st.tuples(st.integers(1, 3_000), st.sampled_from("FA")).map(lambda d: nested_value(*d))


def _wide(n: int) -> bytes:
    """A table of ``n`` items: wide rather than deep."""
    return b"F" + _table([b"\x02%02x" % (i % 256) + b"I\x00\x00\x00\x01" for i in range(n)])


@st.composite
def damaged(draw, item: bytes) -> bytes:
    """``item`` cut short, or with one byte changed (a type, a length, a character)."""
    if not item or draw(st.booleans()):
        return item[: draw(st.integers(0, max(len(item) - 1, 0)))]
    at = draw(st.integers(0, len(item) - 1))
    return item[:at] + bytes([draw(st.integers(0, 255))]) + item[at + 1 :]


def _items(headers: dict[str, Any] | None) -> list[bytes]:
    """Each of ``headers`` as py-amqp encodes a table item (so the rest of the message
    stays what the fuzz drew: its task and id headers too)."""
    return [dumps(b"F", [{k: v}])[4:] for k, v in (headers or {}).items()]


@st.composite
def header_tables(draw, headers: dict[str, Any] | None, forwarded: bool = True) -> bytes:
    """``headers`` as a field table, with one to three items no decoder may expect."""
    items = _items(headers)
    kinds = [values(forwarded), deep, st.integers(1, 500).map(_wide)]
    for _ in range(draw(st.integers(1, 3))):
        item = draw(keys) + draw(st.sampled_from(kinds).flatmap(lambda kind: kind))
        if not forwarded and draw(st.booleans()):
            item = draw(damaged(item))
        items.insert(draw(st.integers(0, len(items))), item)
    return _table(items)


@st.composite
def raw_properties(
    draw, headers: dict[str, Any] | None, forwarded: bool = True
) -> dict[str, bytes]:
    """Property fields as raw bytes (``tests.raw_properties.encode``): a header table
    from ``header_tables``, and/or property strings that are not UTF-8."""
    raw: dict[str, bytes] = {}
    shape = draw(st.sampled_from(["table", "table", "strings", "both"]))
    if shape != "strings":
        raw["application_headers"] = draw(header_tables(headers, forwarded))
    if shape != "table":
        names = st.lists(st.sampled_from(SHORT_STRINGS), min_size=1, max_size=2, unique=True)
        for name in draw(names):
            text = draw(st.binary(min_size=1, max_size=20).filter(_not_utf8))
            raw[name] = bytes([len(text)]) + text
    return raw


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
