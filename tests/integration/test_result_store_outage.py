"""A task that did its work while its result could not be stored is run again, not
dead-lettered: the database being away is an outage to wait out, whichever write hit it.

Found by `make chaos` (a PostgreSQL crash): handled welcome e-mails, and the shard counts
of a report chord, ended in the DLQ as ``task-failed: failed to store result on the
backend``. Here the notifier reaches PostgreSQL through a proxy the test cuts; its admin
notice (no admins configured) touches no table, so only its result write meets the outage.
"""

import time
import uuid
from uuid import NAMESPACE_URL, uuid5

from sqlalchemy import text

from infra.tcp_proxy import TcpProxy
from tests.integration.test_malformed_messages import JSON, envelope, framed, headers
from tests.support import publish_raw, wait_for

OUTAGE = 25  # seconds: past the result backend's own retries (about ten seconds)


def test_a_task_whose_result_cannot_be_stored_runs_again_after_the_outage(clean_queues, db):
    stack = clean_queues
    proxy = TcpProxy.to(stack.database_url).start()
    worker = stack.worker(
        "notifier", DATABASE_URL=proxy.url(stack.database_url), ADMIN_EMAILS=""
    ).start()
    event = envelope(f"store-{uuid.uuid4().hex[:6]}@example.com")
    task_id = str(uuid5(NAMESPACE_URL, f"{event['id']}/notifier.notify_admins_of_signup"))
    try:
        proxy.cut()
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        time.sleep(OUTAGE)
        proxy.restore()

        with db.connect() as conn:
            wait_for(lambda: conn.execute(
                text("SELECT status FROM notifier.celery_taskmeta WHERE task_id = :id"),
                {"id": task_id},
            ).scalar() == "SUCCESS", timeout=120)  # fmt: skip
        wait_for(lambda: stack.smtp.to(event["payload"]["email"]), timeout=60)
        assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        proxy.restore()
        worker.stop()
        proxy.stop()

    assert stack.dead_letters("notifier") == []
