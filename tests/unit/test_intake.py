"""How a CloudEvent's attributes become the envelope (the broker side is in
tests/integration/test_upstream_forms.py)."""

import json

import pytest
from kombu.message import Message

from shared.core.topology import ServiceTopology
from shared.worker.intake import received, translate
from shared.worker.wire import MalformedMessage, check_message

TOPO = ServiceTopology("mail", subscribes=("user.signed_up",))
ATTRS = {"specversion": "1.0", "id": "e-1", "type": "user.signed_up", "source": "crm"}


def arrived(body: dict, content_type: str = "application/cloudevents+json", **headers) -> Message:
    return Message(
        json.dumps(body).encode(), content_type=content_type, content_encoding="utf-8",
        headers=headers, delivery_info={"exchange": "events", "routing_key": "user.signed_up"},
        accept={"application/json"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "version"),
    [
        ("https://schemas.example/user.signed_up/v2", 2),
        ("https://schemas.example/user.signed_up/3", 3),
        ("https://schemas.example/user.signed_up.v4.json", 4),
        ("urn:eventful:user.signed_up:5", 5),
    ],
)
def test_the_contract_version_is_read_from_the_end_of_dataschema(schema, version):
    message = arrived({**ATTRS, "dataschema": schema, "data": {}})
    translate(message, TOPO)
    check_message(message)
    assert message.payload[1]["event"]["version"] == version


def test_dataversion_wins_and_a_translated_message_keeps_what_was_sent():
    sent = {**ATTRS, "dataversion": "7", "time": "2026-11-25T00:00:00Z", "data": {"a": 1}}
    message = arrived(sent)
    translate(message, TOPO)
    assert message.headers == {"task": "user.signed_up", "id": "e-1"}
    assert message.payload == [[], {"event": {"id": "e-1", "type": "user.signed_up",
        "source": "crm", "payload": {"a": 1}, "occurred_at": "2026-11-25T00:00:00Z",
        "version": 7}}, {}]  # fmt: skip
    assert json.loads(received(message).body) == sent
    assert received(message).content_type == "application/cloudevents+json"


def test_celery_messages_and_messages_on_the_tasks_queue_are_left_alone():
    celery = arrived({}, "application/json", task="user.signed_up", id="e-1")
    translate(celery, TOPO)
    command = arrived(ATTRS)
    command.delivery_info = {"exchange": "mail", "routing_key": "mail.tasks"}
    translate(command, TOPO)
    assert received(celery) is celery and received(command) is command


@pytest.mark.parametrize("schema", ["https://schemas.example/signup", "v", 42])
def test_a_dataschema_without_a_version_is_malformed(schema):
    with pytest.raises(MalformedMessage, match="dataschema") as raised:
        translate(arrived({**ATTRS, "dataschema": schema, "data": {}}), TOPO)
    assert raised.value.reason == "malformed-cloudevent"
