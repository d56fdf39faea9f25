"""Test helpers that speak plain AMQP, as a service that is not Celery would."""

import json
import subprocess
import sys
import uuid
from typing import Any

from kombu import Connection

from infra.processes import ROOT, Worker, free_port, wait_for
from infra.smtp_sink import SmtpSink
from shared.worker.allowed import broker_user

__all__ = [
    "JSON", "SmtpSink", "Worker", "bind_probe", "drain", "envelope", "framed", "free_port",
    "headers", "publish_raw", "send_command", "send_raw", "wait_for",
]  # fmt: skip


def drain(amqp_url: str, queue: str, timeout: float = 1.0) -> list[Any]:
    """Take every message now in ``queue`` (acked): what an operator's "Get messages" shows,
    bodies as the bytes on the wire (not decoded by their ``content_encoding``)."""
    taken = []
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.auto_decode = False
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            taken.append(message)
            channel.basic_ack(message.delivery_tag)
    return taken


def publish_raw(amqp_url: str, exchange: str, routing_key: str, body: bytes, **props: Any) -> None:
    """Publish with the plain AMQP client, as an upstream service that is not Celery would."""
    import amqp

    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(
            amqp.Message(body, delivery_mode=2, **props), exchange=exchange,
            routing_key=routing_key,
        )  # fmt: skip


def send_raw(
    amqp_url: str, task: str, kwargs: dict[str, Any], task_id: str, owner: str | None = None
) -> None:
    """Send a task (``notifier.send_email``) in Celery's wire format to its owner's
    exchange, as the service itself or the operator would (``user_id``: the URL's user,
    which ``shared.worker.allowed`` trusts for internal tasks); the same ``task_id`` twice is a
    duplicate."""
    body = json.dumps([[], kwargs, {}]).encode()
    owner = owner or task.split(".", 1)[0]
    publish_raw(
        amqp_url, owner, f"{owner}.tasks", body,
        content_type="application/json", content_encoding="utf-8",
        application_headers={"task": task, "id": task_id}, user_id=broker_user(amqp_url),
    )  # fmt: skip


def send_command(
    stack: Any, task: str, task_id: str | None = None, owner: str | None = None, **kwargs: Any
) -> str:
    """``send_raw`` with a fresh task id unless given; returns it. Over plain AMQP, because
    this process's copy of a service app may have been configured before the test stack.
    ``owner``: the service whose queue runs it, for Celery's own tasks (``celery.*``)."""
    task_id = task_id or str(uuid.uuid4())
    send_raw(stack.amqp_url, task, kwargs, task_id, owner)
    return task_id


def bind_probe(amqp_url: str, routing_key: str, exchange: str = "events") -> str:
    """A fresh queue bound to ``exchange`` (``events``) for ``routing_key``: what a test
    reads published messages from (``drain``). Deleted with the test's vhost."""
    name = f"probe.{routing_key}.{uuid.uuid4().hex[:8]}"
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, exchange, routing_key)
    return name


JSON = {"content_type": "application/json", "content_encoding": "utf-8"}


def envelope(email: str) -> dict:
    """A ``user.signed_up`` envelope, as an upstream writes it."""
    return {
        "id": str(uuid.uuid4()),
        "type": "user.signed_up",
        "version": 1,
        "occurred_at": "2026-11-25T00:00:00Z",
        "source": "upstream",
        "payload": {"user_id": str(uuid.uuid4()), "email": email, "name": "Mal"},
    }


def framed(event: dict) -> bytes:
    """The documented wire format: Celery protocol 2, the envelope as kwarg ``event``."""
    return json.dumps([[], {"event": event}, {}]).encode()


def headers(event: dict, **changes: object) -> dict:
    """The Celery headers of ``framed(event)``; a change to None drops the header."""
    base = {"task": "user.signed_up", "id": event["id"]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def run_client(stack: Any, script: str, *args: str, timeout: float = 120) -> str:
    """``script`` run as a caller would, in its own interpreter with the stack's settings;
    its standard output (it must exit 0)."""
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
