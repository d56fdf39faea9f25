"""`make bench`: the project's throughput beside plain Celery and raw AMQP, in one run.

Every row runs on this machine against the same RabbitMQ and PostgreSQL, in a private
vhost and database, so the ratios hold even when the machine is noisy. A row's tasks are
published first, then one worker drains them: the figure is tasks per second from the
worker's first message to the last task done.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.end_to_end import end_to_end
from bench.measure import Row, drain_with_worker, raw_amqp
from bench.setup import BenchEnv, bench_env
from shared.settings import Settings

CLUSTER = (5681, 5682, 5683)


def task_row(
    name: str, task, queue: str, env: BenchEnv, count: int, worker_args: list[str], logs: Path,
    done: Callable[[], bool] | None = None,
) -> Row:  # fmt: skip
    """Publish ``count`` calls of ``task``, then drain them with one worker of its app."""
    start = time.perf_counter()
    for i in range(count):
        task.delay(i)
    publish = count / (time.perf_counter() - start)
    seconds, rss = drain_with_worker(
        task.run.__module__, queue, env.env(), count, worker_args,
        logs / f"{task.name}.log", done=done,
    )  # fmt: skip
    return Row(name, count / seconds, f"publish {publish:,.0f}/s", rss)


def celery_rows(env: BenchEnv, count: int, worker_args: list[str], logs: Path) -> list[Row]:
    """Plain Celery, then the same trivial task through the platform without and with its
    result stored (STARTED and SUCCESS rows in PostgreSQL)."""
    os.environ.update(AMQP_URL=env.amqp_url, DATABASE_URL=env.database_url)
    from bench.plain_app import noop as plain
    from bench.platform_app import noop, noop_no_result

    engine = create_engine(env.database_url)

    def all_stored() -> bool:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM reports.celery_taskmeta WHERE status = 'SUCCESS'"
            return conn.execute(text(sql)).scalar() == count

    rows = [
        task_row("plain Celery (defaults)", plain, "plain.tasks", env, count, worker_args, logs),
        task_row("this project, result not stored", noop_no_result, "reports.tasks", env, count,
                 worker_args, logs),
        task_row("this project, all guarantees", noop, "reports.tasks", env, count, worker_args,
                 logs, done=all_stored),
    ]  # fmt: skip
    engine.dispose()
    return rows


def print_table(rows: list[Row], baseline: float) -> None:
    print(f"\n{'row':<34} {'per second':>11} {'vs plain Celery':>16} {'worker RSS':>11}  notes")
    for row in rows:
        rss = f"{row.rss_mb:.0f} MiB" if row.rss_mb else "-"
        ratio = row.per_second / baseline
        print(f"{row.name:<34} {row.per_second:>11,.0f} {ratio:>15.2f}x {rss:>11}  {row.detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per Celery row")
    parser.add_argument("--messages", type=int, default=20000, help="raw AMQP messages")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=4, help="worker_prefetch_multiplier")
    parser.add_argument("--events", type=int, default=1000, help="end-to-end signups")
    parser.add_argument(
        "--cluster", action="store_true", help="also end to end on a 3-node cluster"
    )
    args = parser.parse_args()
    worker_args = [f"--pool={args.pool}", f"--concurrency={args.concurrency}",
                   f"--prefetch-multiplier={args.prefetch}"]  # fmt: skip
    settings = Settings()
    logs = Path(tempfile.mkdtemp(prefix="eventful-bench-"))
    print(f"configuration: {args.tasks} tasks/row, {args.messages} raw messages, pool "
          f"{args.pool}, concurrency {args.concurrency}, prefetch multiplier {args.prefetch}, "
          f"quorum queues (raw and project), classic queue (plain Celery), "
          f"{os.cpu_count()} CPUs; worker logs in {logs}")  # fmt: skip
    with bench_env(settings) as env:
        rows = list(raw_amqp(env.amqp_url, args.messages))
        celery = celery_rows(env, args.tasks, worker_args, logs)
        baseline = celery[0]
        rows += [
            *celery,
            end_to_end(env, args.events, worker_args, logs, "end to end: event -> e-mail"),
        ]
    if args.cluster:
        rows.append(on_cluster(settings, args.events, worker_args, logs))
    print_table(rows, baseline.per_second)
    return 0


def on_cluster(settings: Settings, count: int, worker_args: list[str], logs: Path) -> Row:
    """The end-to-end row again, the broker being the 3-node cluster (quorum queues
    replicated to 3 nodes); the cluster is brought up for the run and down after it."""
    subprocess.run(["bash", "infra/cluster.sh", "up"], check=True, stdout=subprocess.DEVNULL)
    try:
        cluster = settings.model_copy(
            update={
                "amqp_url": ";".join(f"amqp://guest:guest@127.0.0.1:{p}//" for p in CLUSTER),
                "rabbitmq_management_url": ";".join(
                    f"http://guest:guest@127.0.0.1:{p + 10000}" for p in CLUSTER
                ),
            }
        )
        with bench_env(cluster) as env:
            return end_to_end(env, count, worker_args, logs, "end to end on 3-node cluster")
    finally:
        subprocess.run(["bash", "infra/cluster.sh", "down"], check=False)


if __name__ == "__main__":
    sys.exit(main())
