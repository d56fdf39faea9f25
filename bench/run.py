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
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.end_to_end import end_to_end
from bench.measure import Row, drain_with_worker, raw_amqp
from bench.setup import BenchEnv, bench_env
from shared.settings import Settings

CLUSTER = (5681, 5682, 5683)


def plain_celery(env: BenchEnv, count: int, worker_args: list[str], logs: Path) -> Row:
    os.environ["AMQP_URL"] = env.amqp_url
    from bench.plain_app import noop

    start = time.perf_counter()
    for i in range(count):
        noop.delay(i)
    publish = count / (time.perf_counter() - start)
    seconds, rss = drain_with_worker(
        "bench.plain_app", "plain.tasks", env.env(), count, worker_args, logs / "plain.log"
    )
    return Row("plain Celery (defaults)", count / seconds, f"publish {publish:,.0f}/s", rss)


def platform(env: BenchEnv, count: int, worker_args: list[str], logs: Path) -> Row:
    os.environ.update(AMQP_URL=env.amqp_url, DATABASE_URL=env.database_url)
    from bench.platform_app import noop

    start = time.perf_counter()
    for i in range(count):
        noop.delay(i)
    publish = count / (time.perf_counter() - start)
    engine = create_engine(env.database_url)

    def all_stored() -> bool:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM reports.celery_taskmeta WHERE status = 'SUCCESS'"
            return conn.execute(text(sql)).scalar() == count

    seconds, rss = drain_with_worker(
        "bench.platform_app", "reports.tasks", env.env(), count, worker_args,
        logs / "platform.log", done=all_stored,
    )  # fmt: skip
    engine.dispose()
    return Row("this project, all guarantees", count / seconds, f"publish {publish:,.0f}/s", rss)


def platform_no_result(env: BenchEnv, count: int, worker_args: list[str], logs: Path) -> Row:
    os.environ.update(AMQP_URL=env.amqp_url, DATABASE_URL=env.database_url)
    from bench.platform_app import noop_no_result

    start = time.perf_counter()
    for i in range(count):
        noop_no_result.delay(i)
    publish = count / (time.perf_counter() - start)
    seconds, rss = drain_with_worker(
        "bench.platform_app", "reports.tasks", env.env(), count, worker_args,
        logs / "platform-no-result.log",
    )  # fmt: skip
    return Row("this project, result not stored", count / seconds, f"publish {publish:,.0f}/s", rss)


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
        baseline = plain_celery(env, args.tasks, worker_args, logs)
        rows += [
            baseline,
            platform_no_result(env, args.tasks, worker_args, logs),
            platform(env, args.tasks, worker_args, logs),
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
