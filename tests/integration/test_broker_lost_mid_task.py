"""A task that fails because the broker went away is delivered again, not also dead-lettered.

Found by `make chaos` (SIGKILL of the RabbitMQ node): welcome tasks whose e-mail had gone
failed on their next publish; the worker dead-lettered them once it reconnected, while the
broker, which had lost their unacked deliveries with the connection, delivered them
again. Each message ended in two places: handled, and in the DLQ. Here the notifier
reaches RabbitMQ through a proxy the test cuts while the welcome is inside SMTP DATA.
"""

import time
import uuid

from infra.tcp_proxy import TcpProxy
from tests.integration.test_malformed_messages import JSON, envelope, framed, headers
from tests.support import publish_raw, wait_for

CUT = 8  # seconds without the broker, from inside the send


def test_a_task_failing_after_its_delivery_was_lost_is_redelivered_not_dead_lettered(
    clean_queues,
):
    stack = clean_queues
    proxy = TcpProxy.to(stack.amqp_url).start()
    worker = stack.worker("notifier", AMQP_URL=proxy.url(stack.amqp_url)).start()
    email = f"lost-{uuid.uuid4().hex[:6]}@example.com"
    event = envelope(email)
    stack.smtp.delay = 3.0
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.receiving, timeout=30)  # the welcome is inside DATA
        proxy.partition()
        time.sleep(CUT)
        stack.smtp.delay = 0.0
        proxy.restore()
        wait_for(lambda: stack.smtp.to(email), timeout=60)
        time.sleep(10)  # the redelivery runs (it finds the e-mail sent) and settles
        assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        stack.smtp.delay = 0.0
        proxy.restore()
        worker.stop()
        proxy.stop()

    assert len(stack.smtp.to(email)) == 1
    assert [m.headers.get("x-task") for m in stack.dead_letters("notifier")] == []
