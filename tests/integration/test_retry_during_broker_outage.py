"""A handler whose retry cannot be published (the broker away) is requeued, not dead-lettered.

Celery's ``Task.retry`` wraps a failed publish in ``Reject(requeue=False)``: the welcome
e-mail that timed out while the broker was away was dead-lettered ``rejected`` for the
outage. Here the notifier reaches RabbitMQ through a proxy the test cuts while the welcome
is inside SMTP DATA; the SMTP answer times out, the retry's publish fails, and the broker
comes back at once: in time for a dead letter, and for the event's redelivery.
"""

import re
import time
import uuid

from infra.tcp_proxy import TcpProxy
from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for

#: The worker's log line of the welcome's failed retry: Celery's ``Reject`` (before the
#: fix) or the broker's own error.
RETRY_FAILED = re.compile(
    r"notifier\.send_welcome_email\[[^\]]+\] (reject requeue=False|raised unexpected)"
)


def test_a_retry_the_broker_cannot_take_requeues_the_event_instead_of_dead_lettering_it(
    clean_queues,
):
    stack = clean_queues
    proxy = TcpProxy.to(stack.amqp_url).start()
    worker = stack.worker(
        "notifier", AMQP_URL=proxy.url(stack.amqp_url), SMTP_TIMEOUT="2", ADMIN_EMAILS="",
        SEND_SOFT_TIME_LIMIT="200", SEND_TIME_LIMIT="300",
    ).start()  # fmt: skip
    email = f"outage-{uuid.uuid4().hex[:6]}@example.com"
    event = envelope(email)
    stack.smtp.delay = 10.0
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.receiving, timeout=30)  # the welcome is inside DATA
        proxy.cut()
        wait_for(lambda: RETRY_FAILED.search(worker.output()), timeout=150)
        stack.smtp.delay = 0.0  # the broker comes back right after the retry's publish failed
        proxy.restore()
        wait_for(lambda: stack.smtp.to(email), timeout=90)
        time.sleep(5)  # a dead letter published on reconnection would be there by now
        dead = stack.dead_letters("notifier")
    finally:
        stack.smtp.delay = 0.0
        proxy.restore()
        worker.stop()
        proxy.stop()

    assert [(m.headers.get("x-task"), m.headers.get("x-dead-letter-reason")) for m in dead] == []
    assert len(stack.smtp.to(email)) == 1
