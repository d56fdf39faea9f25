"""A database outage delays work; it never dead-letters it nor spends a task's retries.

The workers reach PostgreSQL through a loopback proxy the test cuts (the shared server
stays up), for longer than the handlers' own retry budgets would last if waiting for the
database spent them: reports' handlers have Celery's default three retries, the welcome
e-mail five.
"""

import time
import uuid

from sqlalchemy import text

from infra.tcp_proxy import TcpProxy
from services.notifier.deliveries import RECORD_PATIENCE
from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for

OUTAGE = 40  # seconds: several times what three or five spent retries would survive


def test_a_database_outage_dead_letters_nothing_and_loses_nothing(clean_queues, db):
    stack = clean_queues
    proxy = TcpProxy.to(stack.database_url).start()
    env = {"DATABASE_URL": proxy.url(stack.database_url)}
    workers = [stack.worker(name, **env).start() for name in ("notifier", "reports")]
    email = f"outage-{uuid.uuid4().hex[:6]}@example.com"
    event = envelope(email)
    try:
        proxy.cut()
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        time.sleep(OUTAGE)
        assert stack.smtp.to(email) == [], "nothing can be sent before the delivery is recorded"
        proxy.restore()

        wait_for(lambda: stack.smtp.to(email), timeout=120)
        with db.connect() as conn:
            wait_for(lambda: conn.execute(
                text("SELECT count(*) FROM reports.facts WHERE event_id = :id"),
                {"id": event["id"]},
            ).scalar_one() == 1, timeout=60)  # fmt: skip
        for worker in workers:
            assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        proxy.restore()
        for worker in workers:
            worker.stop()
        proxy.stop()

    assert len(stack.smtp.to(email)) == 1
    assert stack.dead_letters("notifier") == []
    assert stack.dead_letters("reports") == []


def test_a_send_accepted_as_the_database_dies_is_not_sent_again_after_a_long_outage(
    clean_queues, db
):
    """The provider accepted the e-mail, then PostgreSQL stayed away longer than a send
    may wait to record it (``RECORD_PATIENCE``): the retry carries the acceptance, so the
    e-mail is recorded once the database is back, never sent a second time."""
    stack = clean_queues
    proxy = TcpProxy.to(stack.database_url).start()
    env = {"DATABASE_URL": proxy.url(stack.database_url), "ADMIN_EMAILS": ""}
    worker = stack.worker("notifier", **env).start()
    email = f"accepted-{uuid.uuid4().hex[:6]}@example.com"
    event = envelope(email)
    stack.smtp.delay = 2.0
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.receiving, timeout=30)  # inside the SMTP conversation
        proxy.cut()
        wait_for(lambda: stack.smtp.to(email), timeout=30)  # accepted, not recordable
        time.sleep(RECORD_PATIENCE + 10)
        proxy.restore()
        with db.connect() as conn:
            wait_for(lambda: conn.execute(
                text("SELECT status FROM notifier.deliveries WHERE id = :k"),
                {"k": f"{event['id']}/welcome_email"},
            ).scalar() == "sent", timeout=60)  # fmt: skip
        time.sleep(2)  # a second send, if any, would come right after the retry
    finally:
        stack.smtp.delay = 0.0
        proxy.restore()
        worker.stop()
        proxy.stop()
    assert len(stack.smtp.to(email)) == 1
    assert stack.dead_letters("notifier") == []
