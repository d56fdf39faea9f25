"""A publisher in another language is part of the suite: ``tests/upstream_node/publish.js``
(amqplib, pinned by its lock file, installed here with ``npm ci``) sends CloudEvents in
structured and binary mode and plain envelopes to ``events``. Each event is one welcome
e-mail and one fact in reports; its malformed variants end in both DLQs with a reason."""

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import envelope, wait_for

NODE_DIR = Path(__file__).resolve().parents[1] / "upstream_node"


@pytest.fixture(scope="module")
def node() -> list[str]:
    """``node publish.js``, its dependencies installed from the lock file if missing."""
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed (Node 18+)"
    if not (NODE_DIR / "node_modules" / "amqplib").exists():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    return ["node", str(NODE_DIR / "publish.js")]


def publish(node: list[str], amqp_url: str, messages: list[dict]) -> None:
    done = subprocess.run(
        [*node, amqp_url.split(";")[0]], input=json.dumps(messages), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_node_publisher_s_events_are_handled_once_and_its_mistakes_dead_lettered(
    clean_queues, db, node
):
    stack = clean_queues
    good = {form: envelope(f"node-{form}-{uuid.uuid4().hex[:6]}@example.com")
            for form in ("structured", "binary", "plain")}  # fmt: skip
    bad = envelope("node-bad@example.com")
    mistakes = {
        "no-id": ({"form": "structured", "event": {**bad, "id": None}}, "malformed-cloudevent"),
        "type-not-routing-key": (
            {"form": "binary", "event": {**bad, "type": "report.generated"}},
            "routing-key-mismatch"),
        "no-type": ({"form": "plain", "event": {**bad, "type": None}}, "malformed-body"),
    }  # fmt: skip
    messages = [{"form": form, "event": e} for form, e in good.items()] * 2  # twice: dedup
    messages += [
        {"routingKey": "user.signed_up", **m, "messageId": case}
        for case, (m, _) in mistakes.items()
    ]

    workers = [stack.worker(name).start() for name in ("notifier", "reports")]
    try:
        publish(node, stack.amqp_url, messages)
        query = sa.text("SELECT count(*) FROM reports.facts WHERE event_id = :id")
        for e in good.values():
            email = e["payload"]["email"]
            wait_for(lambda email=email: stack.smtp.to(email), timeout=60)
            with db.connect() as conn:
                wait_for(lambda e=e, conn=conn: conn.execute(query, {"id": e["id"]}).scalar())
        dead = {"notifier": {}, "reports": {}}
        for name, letters in dead.items():
            wait_for(lambda name=name, letters=letters: letters.update(
                {m.properties.get("message_id"): m for m in stack.dead_letters(name)}
            ) or len(letters) >= len(mistakes), timeout=60)  # fmt: skip
    finally:
        for worker in workers:
            worker.stop()
    assert [len(stack.smtp.to(e["payload"]["email"])) for e in good.values()] == [1, 1, 1]
    for name, letters in dead.items():
        reasons = {case: m.headers["x-dead-letter-reason"] for case, m in letters.items()}
        assert reasons == {case: reason for case, (_, reason) in mistakes.items()}, name
