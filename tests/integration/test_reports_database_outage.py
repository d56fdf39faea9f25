"""A report workflow caught by a database outage finishes once the database is back.

Found by `make chaos` (PostgreSQL ``stop -m immediate`` while reports were generated):
the workflow's own tasks (shard counts, the scan, the render) are not event handlers, so
a database error dead-lettered them (``task-failed``) and the report was never made. The
worker reaches PostgreSQL through a proxy the test cuts while the scan runs.
"""

import time

from sqlalchemy import text

from contracts import GenerateReport
from infra.tcp_proxy import TcpProxy
from tests.integration.test_reports_time_limits import seed_signups
from tests.support import send_command, wait_for

DAY = __import__("datetime").date(2026, 2, 14)
FACTS = 40
OUTAGE = 20  # seconds


def test_a_report_whose_scan_meets_a_database_outage_is_made_after_it(clean_queues, db):
    stack = clean_queues
    seed_signups(db, DAY, FACTS)
    proxy = TcpProxy.to(stack.database_url).start()
    worker = stack.worker(  # 40 facts, 4 per batch, 0.3 s apart: a scan of about 3 s
        "reports", DATABASE_URL=proxy.url(stack.database_url),
        REPORT_SCAN_BATCH="4", REPORT_SCAN_PAUSE="0.3",
    ).start()  # fmt: skip
    try:
        command = GenerateReport(kind="daily", day=DAY)
        send_command(stack, GenerateReport.task, **command.model_dump(mode="json"))
        wait_for(lambda: "reports.collect[" in worker.output(), timeout=60)
        time.sleep(1.0)  # inside the scan
        proxy.cut()
        time.sleep(OUTAGE)
        proxy.restore()

        def report():
            with db.connect() as conn:
                return conn.execute(
                    text("SELECT summary FROM reports.reports WHERE kind='daily' AND day=:d"),
                    {"d": DAY},
                ).one_or_none()

        row = wait_for(report, timeout=120)
        assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        proxy.restore()
        worker.stop()
        proxy.stop()

    assert row.summary["signups"] == FACTS
    assert stack.dead_letters("reports") == []
