"""Retries after a database outage travel Celery's delay queues as often as they need.

Found by `make chaos` (a 5-minute PostgreSQL outage): the outage retry copied the
message's headers, ``x-death`` included, into the new message. On its second pass through
the same ``celery_delayed_*`` queue RabbitMQ saw a dead-letter cycle and, dead-lettering
at-least-once, held it at the head of that delay queue for good, and every retry of every
service behind it (804 welcome e-mails in that run). Here delays are unscaled: the first
two retries both wait 5 s (delay queues 2 and 0).
"""

import time
import uuid

from infra.tcp_proxy import TcpProxy
from tests.integration.test_malformed_messages import JSON, envelope, framed, headers
from tests.support import publish_raw, wait_for

OUTAGE = 12  # seconds: two outage retries of 5 s each, the second through the same queues


def test_a_handler_retried_twice_through_the_same_delay_queues_still_runs(clean_queues):
    stack = clean_queues
    proxy = TcpProxy.to(stack.database_url).start()
    worker = stack.worker(
        "notifier", DATABASE_URL=proxy.url(stack.database_url), RETRY_DELAY_SCALE="1"
    ).start()
    email = f"delays-{uuid.uuid4().hex[:6]}@example.com"
    event = envelope(email)
    try:
        proxy.cut()
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        time.sleep(OUTAGE)
        proxy.restore()
        wait_for(lambda: stack.smtp.to(email), timeout=90)
    finally:
        proxy.restore()
        worker.stop()
        proxy.stop()

    assert len(stack.smtp.to(email)) == 1
