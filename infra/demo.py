"""`make demo`: real signups through the running system, and what became of each.

Starts an SMTP sink and the notifier and reports workers, signs up a few users through
the signup service, waits until every welcome e-mail has arrived and every signup is in
the reports read model, prints one line per user, and exits 0 only if all of it happened.
"""

import os
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from infra.processes import Worker, wait_for
from infra.smtp_sink import SmtpSink

USERS = 5


def main() -> int:
    sink = SmtpSink().start()
    os.environ["SMTP_PORT"] = str(sink.port)
    logs = Path(tempfile.mkdtemp(prefix="eventful-demo-"))
    workers = [Worker(name, dict(os.environ), logs).start() for name in ("notifier", "reports")]
    try:
        from services.signup.app import service
        from services.signup.signup import sign_up

        run = uuid.uuid4().hex[:6]
        emails = [f"user{i}-{run}@example.com" for i in range(USERS)]
        for i, email in enumerate(emails):
            sign_up(service, email=email, name=f"Demo user {i}")
        engine = create_engine(service.settings.database_url)

        def counted() -> int:
            with engine.connect() as conn:
                return conn.execute(
                    text(
                        "SELECT count(*) FROM reports.facts"
                        " WHERE type = 'user.signed_up' AND subject = ANY(:e)"
                    ),
                    {"e": emails},
                ).scalar()

        ok = True
        try:
            wait_for(lambda: all(sink.to(e) for e in emails) and counted() == USERS, 60)
        except AssertionError:
            ok = False
        print(f"{'user':<32} {'welcome e-mails':>16} {'in reports':>11}")
        for email in emails:
            with engine.connect() as conn:
                facts = conn.execute(
                    text(
                        "SELECT count(*) FROM reports.facts"
                        " WHERE type = 'user.signed_up' AND subject = :e"
                    ),
                    {"e": email},
                ).scalar()
            print(f"{email:<32} {len(sink.to(email)):>16} {facts:>11}")
        print(f"signups reported: {counted()}/{USERS}; worker logs in {logs}")
        return 0 if ok else 1
    finally:
        for worker in workers:
            worker.stop()
        sink.stop()


if __name__ == "__main__":
    sys.exit(main())
