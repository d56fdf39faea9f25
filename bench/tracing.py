"""What tracing costs a worker: the project's worker row with tracing off and on, one run.

The row is ``this project, all guarantees`` of ``make bench`` (a trivial task, late acks,
confirms, results in PostgreSQL). Off: no ``OTEL_*`` variable (the ids are still stamped
on every publish). On: ``OTEL_TRACES_EXPORTER=otlp`` to a real OTLP/HTTP receiver on
loopback (``infra.otlp_sink``), the SDK's batch span processor with its defaults, every
task a ``run/<task>`` span. Rounds alternate off and on so both see the same machine; a
row's figure is its best round. The worker's CPU per task (the worker and its pool, from
its first message to the last result stored) is the steadier figure on a busy machine.
``python -m bench.tracing``.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.measure import Row, drain_with_worker
from bench.setup import BenchEnv, bench_env
from infra.otlp_sink import OtlpSink
from shared.core.settings import Settings, get_settings

QUEUE = "reports.tasks"


def tracing_rows(
    env: BenchEnv, count: int, worker_args: list[str], logs: Path, rounds: int = 2
) -> dict[str, Row]:
    """``{"off": Row, "on": Row}``: tasks per second through one worker, best of ``rounds``."""
    os.environ.update(AMQP_URL=env.amqp_url, DATABASE_URL=env.database_url)
    get_settings.cache_clear()
    from bench.platform_app import noop

    engine = create_engine(env.database_url)
    sink = OtlpSink(keep=False).start()
    traced = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
        "OTEL_SERVICE_NAME": "bench",
    }
    figures: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    memory: dict[str, float] = {}

    def stored() -> int:
        with engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('reports.celery_taskmeta')")).scalar():
                sql = "SELECT count(*) FROM reports.celery_taskmeta WHERE status = 'SUCCESS'"
                return conn.execute(text(sql)).scalar()
            return 0

    try:
        for n in range(rounds):
            for label, extra in (("off", {}), ("on", traced)):
                target = stored() + count
                for i in range(count):
                    noop.delay(i)
                used: list[float] = []
                seconds, memory[label], _ = drain_with_worker(
                    noop.run.__module__, QUEUE, env.env(**extra), count, worker_args,
                    logs / f"tracing-{label}-{n}.log", done=lambda t=target: stored() >= t,
                    cpu=used,
                )  # fmt: skip
                figures[label].append(count / seconds)
                cpu[label].append(used[0] / count * 1000)
        spans = sink.received
    finally:
        sink.stop()
        engine.dispose()
    rows = {}
    for label, name in (("off", "worker row, tracing off"), ("on", "worker row, tracing on")):
        rounds_seen = ", ".join(f"{f:,.0f}" for f in figures[label])
        detail = f"rounds {rounds_seen}/s; worker CPU {min(cpu[label]):.2f} ms/task"
        if label == "on":
            detail += f"; {spans:,} spans to the OTLP sink"
        rows[label] = Row(name, max(figures[label]), detail, memory[label])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    worker_args = [f"--pool={args.pool}", f"--concurrency={args.concurrency}"]
    logs = Path(tempfile.mkdtemp(prefix="eventful-bench-tracing-"))
    print(f"configuration: {args.tasks} tasks x {args.rounds} rounds per row, pool {args.pool},"
          f" concurrency {args.concurrency}, {os.cpu_count()} CPUs; logs in {logs}")  # fmt: skip
    started = time.perf_counter()
    with bench_env(Settings()) as env:
        rows = tracing_rows(env, args.tasks, worker_args, logs, args.rounds)
    off = rows["off"].per_second
    print(f"\n{'row':<26} {'per second':>11} {'vs off':>8} {'worker RSS':>11}  notes")
    for row in rows.values():
        rss = f"{row.rss_mb:.0f} MiB" if row.rss_mb else "-"
        print(f"{row.name:<26} {row.per_second:>11,.0f} {row.per_second / off:>7.2f}x "
              f"{rss:>11}  {row.detail}")  # fmt: skip
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
