"""`python -m bench.notifier`: e-mails per second through a real notifier worker and SMTP.

Publishes ``--count`` ``send_email`` commands (persistent, confirmed) to ``notifier.tasks``
in a private vhost and database, then starts one notifier worker and times it from ready
until the loopback SMTP sink holds every e-mail. Each e-mail is the whole path: claim the
delivery row (insert, then ``SELECT ... FOR UPDATE``), the SMTP send, commit, publish
``notification.sent`` with confirms, store the result in PostgreSQL, late ack.
"""

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kombu import Connection, Exchange, Producer
from sqlalchemy import create_engine, text

from bench.measure import cpu_seconds
from bench.setup import BenchEnv, bench_env
from infra.processes import Worker, wait_for
from infra.smtp_sink import SmtpSink
from shared.core.settings import Settings
from shared.core.topology import SERVICES


def publish_commands(amqp_url: str, count: int) -> float:
    """Publish ``count`` send_email commands; commands per second (each confirmed)."""
    exchange = Exchange("notifier", type="topic", durable=True)
    start = time.perf_counter()
    with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.default_channel, exchange=exchange)
        for i in range(count):
            task_id = str(uuid.uuid4())
            command = {"to": f"bench-{i}@example.com", "subject": f"Bench {i}", "body": "Hello."}
            producer.publish(
                json.dumps([[], command, {}]), routing_key="notifier.tasks",
                content_type="application/json", content_encoding="utf-8",
                headers={"task": "notifier.send_email", "id": task_id}, delivery_mode=2,
            )  # fmt: skip
    return count / (time.perf_counter() - start)


def sent_deliveries(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM notifier.deliveries WHERE status = 'sent'"
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def run(env: BenchEnv, args: argparse.Namespace) -> float:
    sink = SmtpSink().start()
    logs = Path(tempfile.mkdtemp(prefix="bench-notifier-"))
    worker_env = env.env(SMTP_PORT=str(sink.port), ADMIN_EMAILS="")
    worker_args = ["--pool", args.pool, "--concurrency", str(args.concurrency),
                   "--prefetch-multiplier", str(args.prefetch)]  # fmt: skip
    try:
        publish_rate = publish_commands(env.amqp_url, args.count)
        worker = Worker("notifier", worker_env, logs, *worker_args).start()
        assert worker.proc is not None
        start, start_cpu = time.perf_counter(), cpu_seconds(worker.proc.pid)
        try:
            wait_for(lambda: len(sink.messages) >= args.count, timeout=110, interval=0.05)
            elapsed = time.perf_counter() - start
            # The last e-mails' commits, publishes and results follow their SMTP send.
            wait_for(lambda: sent_deliveries(env.database_url) >= args.count, timeout=30)
            time.sleep(0.5)
            cpu = cpu_seconds(worker.proc.pid) - start_cpu
        finally:
            worker.stop()
    finally:
        sink.stop()
    sent = sent_deliveries(env.database_url)
    rate = args.count / elapsed
    print(f"published {args.count} send_email commands at {publish_rate:,.0f}/s (confirmed)")
    print(f"e-mails received by the SMTP sink: {len(sink.messages)}; deliveries 'sent': {sent}")
    print(f"{rate:,.1f} e-mails/s ({elapsed:.2f} s from worker ready to the last e-mail)")
    print(
        f"worker CPU: {cpu * 1000 / args.count:.2f} ms per e-mail "
        f"({cpu:.2f} s, main process and pool, start-up left out)"
    )
    print(f"worker log: {worker.log}")
    if len(sink.messages) != args.count or sent != args.count:
        raise SystemExit("not every command was delivered exactly once")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="send_email commands (bounded)")
    parser.add_argument("--pool", default="prefork", help="worker pool (prefork, threads, solo)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency")
    parser.add_argument("--prefetch", type=int, default=4, help="worker_prefetch_multiplier")
    args = parser.parse_args()
    queue_type = SERVICES["notifier"].work_queue_arguments()["x-queue-type"]
    print(
        f"notifier bench: pool={args.pool} concurrency={args.concurrency} "
        f"prefetch_multiplier={args.prefetch} (prefetch {args.prefetch * args.concurrency}) "
        f"queue=notifier.tasks ({queue_type}) count={args.count} "
        "smtp=loopback aiosmtpd sink, one kept SMTP session per pool process; "
        "acks_late, confirms, results in PostgreSQL"
    )
    with bench_env(Settings()) as env:
        run(env, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
