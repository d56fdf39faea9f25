"""Test helpers that speak plain AMQP, as a service that is not Celery would."""

from typing import Any

from kombu import Connection

from infra.processes import Worker, free_port, wait_for
from infra.smtp_sink import SmtpSink

__all__ = ["SmtpSink", "Worker", "drain", "free_port", "publish_raw", "wait_for"]


def drain(amqp_url: str, queue: str, timeout: float = 1.0) -> list[Any]:
    """Take every message now in ``queue`` (acked): what an operator's "Get messages" shows."""
    taken = []
    with Connection(amqp_url) as conn:
        channel = conn.channel()
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
