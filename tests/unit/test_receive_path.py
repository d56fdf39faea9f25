"""The receive path as a list of steps: its order, and each step on its own (the steps
against a real broker: test_trust_boundary.py, test_dead_letters*.py, test_intake*.py)."""

import json

import pytest
from kombu.message import Message

from shared.worker import receive
from shared.worker.receive import (
    STEPS,
    Receiving,
    check_frames,
    check_limits,
    check_protocol,
    keep_raw_body,
)
from shared.worker.wire import MalformedMessage

NO_APP = Receiving(app=None, max_eta=60.0, max_time_limit=120.0)
ORDER = ["check_frames", "keep_raw_body", "read_form", "check_protocol", "check_limits",
         "check_sender"]  # fmt: skip


def _message(body: object, **headers: object) -> Message:
    return Message(json.dumps(body).encode(), content_type="application/json",
                   content_encoding="utf-8", headers=headers)  # fmt: skip


def test_the_steps_run_in_the_order_the_module_states():
    assert [step.__name__ for step in STEPS] == ORDER
    stated = receive.__doc__.split("STEPS = (", 1)[1].split(")", 1)[0]
    assert [name.strip() for name in stated.split(",")] == ORDER


def test_a_message_passing_every_check_is_dispatched_with_its_raw_body_kept():
    message = _message([[], {}, {}], task="t", id="i")
    dispatched = []
    steps = (check_frames, keep_raw_body, check_protocol, check_limits)
    receive.receive(NO_APP, message, dispatched.append, steps)
    assert dispatched == [message]
    assert message.wire_body == json.dumps([[], {}, {}]).encode()


def test_the_first_step_that_refuses_stops_the_message_before_dispatch():
    message = _message({"task": "t", "id": "i", "args": [], "kwargs": {}})  # protocol 1
    ran, dispatched = [], []

    def after(_: Receiving, m: Message) -> None:
        ran.append(m)

    with pytest.raises(MalformedMessage) as refused:
        receive.receive(NO_APP, message, dispatched.append, (keep_raw_body, check_protocol, after))
    assert refused.value.reason == "protocol-1"
    assert ran == [] and dispatched == []
    assert message.wire_body  # kept before the refusal, for the dead-letter copy


def test_keep_raw_body_keeps_the_bytes_a_codec_would_not_give_back():
    sent = "\ufeffhello".encode("utf-16-be")  # a byte-order mark utf-16 re-encodes otherwise
    message = Message(sent, content_type="text/plain", content_encoding="utf-16")
    keep_raw_body(NO_APP, message)
    assert message.wire_body == sent
    assert message.body == sent.decode("utf-16")
    assert message.body.encode("utf-16") != sent


def test_check_limits_refuses_a_time_limit_the_broker_would_not_wait_for():
    message = _message([[], {}, {}], task="t", id="i", timelimit=[None, 500])
    with pytest.raises(MalformedMessage):
        check_limits(NO_APP, message)
    check_limits(Receiving(app=None, max_eta=60.0, max_time_limit=600.0), message)
