"""Events per second from `user.signed_up` published to the welcome e-mail delivered.

N events wait in the broker, then a notifier and a reports worker start: the figure runs
from the first message taken to the last welcome e-mail received by the SMTP sink (and
every signup in the reports read model). Every guarantee is on: outbox-style confirmed
publishing, late acks, quorum queues, idempotent deliveries, results in PostgreSQL.
"""

import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.measure import Row, cpu_seconds, ready_messages, rss_mb
from bench.setup import BenchEnv
from contracts import UserSignedUp
from infra.processes import Worker, wait_for
from infra.smtp_sink import SmtpSink
from shared.core.settings import Settings
from shared.service.declaration import Service


def end_to_end(env: BenchEnv, count: int, worker_args: list[str], logs: Path, label: str) -> Row:
    signup = Service("signup", settings=Settings(amqp_url=env.amqp_url,
                                                 database_url=env.database_url))  # fmt: skip
    run = uuid.uuid4().hex[:6]
    emails = [f"e2e{i}-{run}@example.com" for i in range(count)]
    for i, email in enumerate(emails):
        payload = {"user_id": uuid.uuid4(), "email": email, "name": f"Bench {i}"}
        signup.publish(UserSignedUp(source="bench", payload=payload))

    sink = SmtpSink().start()
    engine = create_engine(env.database_url)
    extra = {"SMTP_PORT": str(sink.port), "ADMIN_EMAILS": ""}
    workers = [
        Worker(name, env.env(**extra), logs, *worker_args) for name in ("notifier", "reports")
    ]
    try:
        # Both start at once and the clock runs from the first event either takes: started
        # one after the other, the first would drain events before the clock starts.
        with ThreadPoolExecutor(len(workers)) as pool:
            starting = [pool.submit(worker.start) for worker in workers]
            wait_for(lambda: any(ready_messages(env.amqp_url, f"{w.service}.events") < count
                                 for w in workers), 120, 0.01)  # fmt: skip
            start = time.perf_counter()
            for started in starting:
                started.result()
        cpu = {w.service: cpu_seconds(w.proc.pid) for w in workers}

        def reported() -> int:
            with engine.connect() as conn:
                sql = "SELECT count(*) FROM reports.facts WHERE type = 'user.signed_up'"
                return conn.execute(text(sql)).scalar()

        wait_for(lambda: len(sink.messages) >= count and reported() >= count, 900, 0.05)
        elapsed = time.perf_counter() - start
        memory = sum(rss_mb(w.proc.pid) for w in workers)
        cpu = {w.service: cpu_seconds(w.proc.pid) - cpu[w.service] for w in workers}
        received = sink.since(0)  # one snapshot for both counts below
        delivered = {to for m in received for to in m["to"]}
        missing = len(set(emails) - delivered)
        duplicates = len(received) - len(delivered)
    finally:
        for worker in workers:
            worker.stop()
        sink.stop()
        engine.dispose()
    note = (f"{count} events, missing {missing}, duplicate e-mails {duplicates}, "
            "workers' CPU per event " + ", ".join(f"{name} {1000 * seconds / count:.1f} ms"
                                                  for name, seconds in cpu.items()))  # fmt: skip
    return Row(label, count / elapsed, note, memory, unit="events/s")


def main() -> int:
    """``python -m bench.end_to_end [--events N] [--tasks N] [--pool P] [--concurrency N]
    [--prefetch N]``: ``bench.run``'s plain Celery and end-to-end rows alone, side by side
    in one run; the results go beside the worker logs, not over ``make bench``'s."""
    from bench import run

    out = Path(tempfile.mkdtemp(prefix="eventful-e2e-")) / "end_to_end.json"
    return run.main(["--only", "plain,end-to-end", "--out", str(out), *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
