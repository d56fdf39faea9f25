"""The contracts as documents (``contracts/``): generated from the code, committed, and
checked here: stale documents fail with the command that regenerates them, and the
AsyncAPI document keeps the AsyncAPI 3.0 shape and says who publishes and who consumes."""

import json
import re
from pathlib import Path

from shared.contracts import documents as contract_docs
from shared.contracts.models import Command, Event
from shared.core.topology import SERVICES

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
COMPONENT_KEY = re.compile(r"^[\w\d.\-_]+$")  # AsyncAPI 3.0 components' key pattern
CHANNEL_FIELDS = {"address", "title", "summary", "description", "messages", "bindings",
                  "parameters", "servers", "tags", "externalDocs"}  # fmt: skip
OPERATION_FIELDS = {"action", "channel", "title", "summary", "description", "messages",
                    "bindings", "reply", "security", "tags", "traits", "externalDocs"}  # fmt: skip
MESSAGE_FIELDS = {"name", "title", "summary", "description", "contentType", "headers",
                  "payload", "correlationId", "bindings", "examples", "tags", "traits",
                  "externalDocs"}  # fmt: skip


def asyncapi() -> dict:
    return json.loads((CONTRACTS / "asyncapi.json").read_text())


def resolve(document: dict, ref: dict) -> dict:
    """What a local ``$ref`` names; KeyError if nothing."""
    node = document
    for part in ref["$ref"].removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_committed_contract_documents_match_the_code():
    stale = contract_docs.drift(CONTRACTS)
    assert stale == [], "\n".join(
        ["contracts/ differs from the code:", *stale, f"to regenerate: {contract_docs.REGENERATE}"]
    )


def test_a_stale_document_is_named(tmp_path):
    contract_docs.write(tmp_path)
    (tmp_path / "commands/notifier.send_sms.json").write_text("{}\n")
    (tmp_path / "events/user.signed_up/v2.json").unlink()
    assert contract_docs.drift(tmp_path) == [
        "commands/notifier.send_sms.json: differs from the code",
        "events/user.signed_up/v2.json: not committed",
    ]


def test_there_is_a_json_schema_per_event_version_and_per_command():
    for event_type, version in Event.registry:
        schema = json.loads((CONTRACTS / f"events/{event_type}/v{version}.json").read_text())
        assert schema["properties"]["version"]["const"] == version
    for task in Command.registry:
        if Command.registry[task].owner() in SERVICES:
            assert (CONTRACTS / f"commands/{task}.json").exists()


def test_the_asyncapi_document_has_the_asyncapi_3_0_shape():
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    for server in doc["servers"].values():
        assert {"host", "protocol"} <= server.keys()
    for section in doc["components"].values():
        assert all(COMPONENT_KEY.match(key) for key in section)
    for message in doc["components"]["messages"].values():
        assert message.keys() <= MESSAGE_FIELDS
        assert resolve(doc, message["payload"])["type"] == "object"
    for name, channel in doc["channels"].items():
        assert channel.keys() <= CHANNEL_FIELDS, name
        for ref in channel.get("messages", {}).values():
            assert resolve(doc, ref).keys() <= MESSAGE_FIELDS
        amqp = channel["bindings"]["amqp"]
        assert amqp["is"] in ("routingKey", "queue") and amqp["bindingVersion"] == "0.3.0"
        owns = {"routingKey": "exchange", "queue": "queue"}
        assert owns[amqp["is"]] in amqp and len({"exchange", "queue"} & amqp.keys()) == 1
    for name, operation in doc["operations"].items():
        assert operation.keys() <= OPERATION_FIELDS, name
        assert operation["action"] in ("send", "receive")
        channel = resolve(doc, operation["channel"])
        for ref in operation.get("messages", []):  # a subset of its channel's messages
            assert ref["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), name
            resolve(doc, ref)
        assert operation.get("messages") is None or channel.get("messages")


def test_the_asyncapi_document_says_who_publishes_and_who_consumes_each_event():
    operations = asyncapi()["operations"]
    for topo in SERVICES.values():
        for event_type in topo.publishes:
            sends = operations[f"{topo.name}.publishes.{event_type}"]
            assert sends["action"] == "send"
            assert sends["channel"] == {"$ref": f"#/channels/events.{event_type}"}
        for event_type in topo.subscribes:
            receives = operations[f"{topo.name}.subscribes.{event_type}"]
            assert receives["channel"] == {"$ref": f"#/channels/{topo.events_queue}"}
            assert len(receives["messages"]) == sum(t == event_type for t, _ in Event.registry)


def test_eventful_contracts_check_fails_on_stale_documents_naming_the_fix(tmp_path, capsys):
    from shared.ops.cli import main

    assert main(["contracts", "check", "--dir", str(CONTRACTS)]) == 0
    assert main(["contracts", "check", "--dir", str(tmp_path)]) == 1
    assert "to regenerate: eventful contracts write" in capsys.readouterr().out
