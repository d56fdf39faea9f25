"""`eventful upstream add crm --publishes user.signed_up` gives an upstream a broker user
that publishes only those event types to `events` and reads nothing; `list` shows it,
`remove` deletes it. Tried from the upstream's side with a plain AMQP client."""

import json
import re
import subprocess
import sys
import uuid

import amqp
import pytest
from kombu import Connection

from tests.support import JSON, drain, envelope, publish_raw


def ops(stack, prefix: str, *args: str, ok: bool | None = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "shared.ops", *args],
        env={**stack.env, "SERVICE_USER_PREFIX": prefix}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    if ok is not None:
        assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


@pytest.fixture
def crm(stack):
    """An upstream ``crm`` (under a prefix of this test's own), removed afterwards."""
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    added = ops(stack, prefix, "upstream", "add", "crm", "--publishes", "user.signed_up")
    url = re.search(r"^AMQP_URL=(\S+)$", added.stdout, re.MULTILINE).group(1)
    yield prefix, url
    ops(stack, prefix, "upstream", "remove", "crm", ok=None)  # gone already is fine


def signed_up(url: str, routing_key: str = "user.signed_up") -> None:
    e = envelope("crm@example.com")
    publish_raw(url, "events", routing_key, json.dumps(e).encode(), **JSON)


def test_an_upstream_publishes_only_its_event_types_and_reads_nothing(stack, clean_queues, crm):
    prefix, url = crm
    signed_up(url)  # its own event type: accepted and routed to both subscribers
    assert len(drain(stack.amqp_url, "notifier.events")) == 1
    with pytest.raises(amqp.exceptions.AccessRefused, match="report.generated"):
        signed_up(url, "report.generated")
    for queue in ("notifier.events", "reports.events", "events.unrouted", "notifier.dlq"):
        with Connection(url) as conn, pytest.raises(amqp.exceptions.AccessRefused):
            conn.channel().basic_consume(queue, callback=lambda m: None)
    with Connection(url) as conn, pytest.raises(amqp.exceptions.AccessRefused):
        conn.channel().queue_declare(f"crm.{uuid.uuid4().hex[:6]}")


def test_upstreams_are_listed_and_removed(stack, crm):
    prefix, url = crm
    listed = json.loads(ops(stack, prefix, "upstream", "list", "--json").stdout)
    assert listed == [{"name": "crm", "user": f"{prefix}crm", "publishes": ["user.signed_up"]}]
    ops(stack, prefix, "upstream", "remove", "crm")
    assert json.loads(ops(stack, prefix, "upstream", "list", "--json").stdout) == []
    with pytest.raises(amqp.exceptions.AccessRefused), Connection(url) as conn:
        conn.connect()


def test_an_upstream_cannot_be_given_an_event_type_nobody_subscribes_to(stack):
    refused = ops(stack, "tx-", "upstream", "add", "crm", "--publishes", "user.deleted", ok=False)
    assert "user.deleted" in refused.stderr and refused.returncode == 2
