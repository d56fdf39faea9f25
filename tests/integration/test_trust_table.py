"""The table of who may set what (docs/reference/trust.md), row by row: each
part set to its probe by another service (signup, a command to notifier.tasks) and by an
upstream (``user.signed_up`` on events), against a notifier worker running as its own
user. Generated from ``shared.worker.trust.PARTS``, the table the worker itself applies, and
the docs page is checked to be built from that table.

All probes are published at once (a module fixture), then each case reads its own outcome:
an e-mail to its own address (``runs``), or its dead letter and reason.
"""

import json
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import amqp
import pytest
from kombu import Connection

from shared.worker.trust import EMBED, PARTS, Part, markdown
from tests.docs import rendered
from tests.support import JSON, envelope, wait_for

ROUTES = ("another service", "upstream")


@dataclass
class Case:
    part: Part
    name: str
    route: str
    to: str = ""
    message_id: str = ""
    published: bool = True
    refusal: str = ""

    @property
    def key(self) -> str:
        return f"{self.part.where}:{self.name}:{self.route}"


CASES = [Case(p, n, r) for p in PARTS if p.proof == "" for n in p.names for r in ROUTES]


def _probe(case: Case, task_id: str) -> Any:
    value = case.part.probe() if callable(case.part.probe) else case.part.probe
    return value.replace("{id}", task_id) if isinstance(value, str) else value


def _message(case: Case, creds) -> tuple[str, str, dict, dict, bytes]:
    """(exchange, routing key, headers, properties, body) of ``case``'s probe."""
    case.to, case.message_id = f"probe-{uuid.uuid4().hex[:10]}@example.com", str(uuid.uuid4())
    if case.route == "upstream":
        event = envelope(case.to)
        task_id, task, kwargs = event["id"], "user.signed_up", {"event": event}
        exchange, key = "events", "user.signed_up"
    else:
        task_id, task = str(uuid.uuid4()), "notifier.send_email"
        kwargs, exchange, key = (
            {"to": case.to, "subject": "s", "body": "b"},
            "notifier",
            "notifier.tasks",
        )
    headers, props, embed = (
        {"task": task, "id": task_id},
        {**JSON, "message_id": case.message_id},
        {},
    )
    probe = _probe(case, task_id)
    if case.part.where == "property":
        props[case.name] = creds.user("notifier") if case.name == "user_id" else probe
    elif case.part.where == "header":
        headers[case.name] = probe
    elif case.name.startswith("embed"):
        part = case.name.removeprefix("embed ")
        embed[part if part in EMBED else "is_eager"] = probe
    if case.name.startswith("protocol 1"):
        body = {"task": task, "id": task_id, "args": [], "kwargs": kwargs}
        return exchange, key, {}, props, json.dumps(body).encode()
    return exchange, key, headers, props, json.dumps([[], kwargs, embed]).encode()


@pytest.fixture(scope="module")
def outcomes(stack, creds, upstream) -> dict[str, str]:
    """Each case's outcome: ``runs``, ``broker refuses``, or its dead letter's reason."""
    queues = ["notifier.events", "notifier.tasks", "notifier.dlq", "reports.events"]
    stack.purge(*queues)
    worker = stack.worker(
        "notifier",
        AMQP_URL=creds.amqp_url("notifier", stack.amqp_url),
        DATABASE_URL=creds.database_url("notifier", stack.database_url),
    )
    urls = {"another service": creds.amqp_url("signup", stack.amqp_url), "upstream": upstream}
    users = {"another service": creds.user("signup"), "upstream": None}
    conns: dict[str, Connection] = {}
    try:
        worker.start()
        for case in CASES:
            exchange, key, headers, props, body = _message(case, creds)
            props.setdefault("user_id", users[case.route])
            props = {k: v for k, v in props.items() if v is not None}
            if case.route not in conns:
                conns[case.route] = Connection(urls[case.route])
                conns[case.route].default_channel.confirm_select()
            message = amqp.Message(body, application_headers=headers, delivery_mode=2, **props)
            try:
                conns[case.route].default_channel.basic_publish_confirm(
                    message, exchange=exchange, routing_key=key
                )
            except amqp.exceptions.AMQPError as exc:  # the broker closed the channel
                case.published, case.refusal = False, str(exc)
                conns.pop(case.route).release()
        found: dict[str, str] = {}

        def settled() -> bool:
            found.update({m.properties.get("message_id"): m.headers.get("x-dead-letter-reason")
                          for m in stack.dead_letters("notifier")})  # fmt: skip
            return all(not c.published or c.message_id in found or stack.smtp.to(c.to)
                       for c in CASES)  # fmt: skip

        with suppress(AssertionError):  # a case that never settles fails alone, below ("?")
            wait_for(settled, timeout=120, interval=1)
        assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        for conn in conns.values():
            conn.release()
        worker.stop()
        stack.purge(*queues)
    return {
        c.key: f"broker refuses: {c.refusal}" if not c.published
        else found.get(c.message_id) or f"runs, {len(stack.smtp.to(c.to))} e-mail(s)"
        for c in CASES
    }  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_each_row_of_the_trust_table_holds_from_another_service_and_an_upstream(outcomes, case):
    expected = (case.part.on_events if case.route == "upstream" else "") or case.part.outcome
    expected = "runs, 1 e-mail(s)" if expected == "runs" else expected
    assert outcomes[case.key].startswith(expected), outcomes[case.key]


def test_the_docs_show_the_table_the_worker_applies():
    assert markdown() in rendered("reference/trust.md")
