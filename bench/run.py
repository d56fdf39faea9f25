"""`make bench`: the project's throughput beside plain Celery and raw AMQP, in one run.

Every row runs on this machine against the same RabbitMQ and PostgreSQL, in a private
vhost and database, so the ratios hold even when the machine is noisy. A Celery row's
tasks are published first (the producer rows time that), then one worker drains them:
the figure is tasks per second from the worker's first message to the last task done.

Rows come from row functions (``ROWS``): each takes the run (``Bench``) and returns
``bench.measure.Row``s; progress is printed as each starts and ends, and the results go
to JSON (``--out``) with a PNG chart beside it (``bench/report.py``).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from bench import report
from bench.end_to_end import end_to_end
from bench.measure import (
    PLAIN,
    PLAIN_PUBLISH,
    PLAIN_RSS,
    Row,
    drain_with,
    drain_with_worker,
    raw_amqp,
    with_ratios,
)
from bench.setup import BenchEnv, bench_env
from shared.core.settings import Settings, get_settings

CLUSTER = (5681, 5682, 5683)

#: The issue's targets: ratios to plain Celery in the same run.
PRODUCER_TARGET = 0.60
STORED_TARGET = 0.60
RSS_TARGET = 1.5


@dataclass
class Bench:
    """What a row function gets: the run's options, its private vhost and database (``env``;
    None for rows that bring their own), where worker logs go, and the rows so far."""

    args: argparse.Namespace
    settings: Settings
    logs: Path
    env: BenchEnv | None = None
    rows: list[Row] = field(default_factory=list)

    @property
    def worker_args(self) -> list[str]:
        a = self.args
        return [f"--pool={a.pool}", f"--concurrency={a.concurrency}",
                f"--prefetch-multiplier={a.prefetch}"]  # fmt: skip


RowFunction = Callable[[Bench], list[Row]]


def publish(task, count: int) -> float:
    """``task.delay(i)`` for i < count; publishes per second."""
    start = time.perf_counter()
    for i in range(count):
        task.delay(i)
    return count / (time.perf_counter() - start)


def drain(
    bench: Bench, task, queue: str, done: Callable[[], bool] | None = None,
    cpu: list[float] | None = None,
):  # fmt: skip
    assert bench.env is not None
    return drain_with_worker(
        task.run.__module__, queue, bench.env.env(), bench.args.tasks, bench.worker_args,
        bench.logs / f"{task.name}.log", done=done, cpu=cpu,
    )  # fmt: skip


def per_message_ms(cpu: list[float], count: int) -> float:
    return round(1000 * cpu[0] / count, 3)


def _apps(bench: Bench):
    """The bench's two Celery apps, configured for the run's vhost and database."""
    assert bench.env is not None
    os.environ.update(AMQP_URL=bench.env.amqp_url, DATABASE_URL=bench.env.database_url)
    get_settings.cache_clear()
    from bench import plain_app, platform_app

    return plain_app, platform_app


def raw_rows(bench: Bench) -> list[Row]:
    assert bench.env is not None
    return list(raw_amqp(bench.env.amqp_url, bench.args.messages))


def plain_rows(bench: Bench) -> list[Row]:
    """Plain Celery with its defaults: early ack, no confirms, results ignored."""
    plain_app, _ = _apps(bench)
    rate = publish(plain_app.noop, bench.args.tasks)
    cpu: list[float] = []
    seconds, rss, pss = drain(bench, plain_app.noop, "plain.tasks", cpu=cpu)
    ms = per_message_ms(cpu, bench.args.tasks)
    return [
        Row("producer: plain Celery delay() (no confirms)", rate, key=PLAIN_PUBLISH,
            unit="publishes/s", baseline=PLAIN_PUBLISH),
        Row("plain Celery (defaults, results ignored)", bench.args.tasks / seconds,
            f"early ack, no confirms, classic queue; {ms} ms CPU/task", rss, key=PLAIN,
            extra={"cpu_ms_per_message": ms, "pss_mb": pss}),
        Row("worker RSS: plain Celery", rss, f"main process + pool; PSS {pss:.0f} MiB",
            key=PLAIN_RSS, unit="MiB", baseline=PLAIN_RSS, better="lower",
            extra={"pss_mb": pss}),
    ]  # fmt: skip


def project_no_result_rows(bench: Bench) -> list[Row]:
    """The platform's task without its result stored; published in a ``confirmed_batch``."""
    from shared.worker.confirms import confirmed_batch

    _, platform_app = _apps(bench)
    with confirmed_batch(platform_app.app):
        rate = publish(platform_app.noop_no_result, bench.args.tasks)
    cpu: list[float] = []
    seconds, rss, pss = drain(bench, platform_app.noop_no_result, "reports.tasks", cpu=cpu)
    ms = per_message_ms(cpu, bench.args.tasks)
    return [
        Row("producer: this project, delay() in confirmed_batch (pipelined confirms)", rate,
            "every publish confirmed at the block's end", key="project-publish-batched",
            unit="publishes/s", baseline=PLAIN_PUBLISH, target=PRODUCER_TARGET),
        Row("this project, result not stored", bench.args.tasks / seconds,
            f"acks_late, confirms, quorum queue, dead-lettering; {ms} ms CPU/task", rss,
            key="project-no-result", extra={"cpu_ms_per_message": ms, "pss_mb": pss}),
    ]  # fmt: skip


def project_stored_rows(bench: Bench) -> list[Row]:
    """All guarantees: STARTED and SUCCESS rows in PostgreSQL; each publish confirmed."""
    assert bench.env is not None
    _, platform_app = _apps(bench)
    count = bench.args.tasks
    engine = create_engine(bench.env.database_url)
    sql = text("SELECT count(*) FROM reports.celery_taskmeta WHERE status = 'SUCCESS'")

    def all_stored() -> bool:
        with engine.connect() as conn:
            return conn.execute(sql).scalar() == count

    rate = publish(platform_app.noop, count)
    cpu: list[float] = []
    try:
        seconds, rss, pss = drain(bench, platform_app.noop, "reports.tasks", all_stored, cpu)
    finally:
        engine.dispose()
    ms = per_message_ms(cpu, count)
    return [
        Row("producer: this project, delay() confirmed one by one", rate,
            "each publish waits for its confirm", key="project-publish-each",
            unit="publishes/s", baseline=PLAIN_PUBLISH),
        Row("this project, all guarantees (result stored)", count / seconds,
            f"+ STARTED/SUCCESS rows in PostgreSQL; {ms} ms CPU/task", rss,
            key="project-stored", target=STORED_TARGET,
            extra={"cpu_ms_per_message": ms, "pss_mb": pss}),
        Row("worker RSS: this project (all guarantees)", rss,
            f"main process + pool; PSS {pss:.0f} MiB", extra={"pss_mb": pss},
            key="project-rss", unit="MiB", baseline=PLAIN_RSS, better="lower",
            target=RSS_TARGET),
    ]  # fmt: skip


def _peer_row(bench: Bench, name: str, cmd: list[str], queue: str, detail: str) -> list[Row]:
    """A peer's worker draining ``--tasks`` no-op messages already queued: consume rate, CPU
    per message, RSS and PSS, beside plain Celery's in the same run."""
    assert bench.env is not None
    cpu: list[float] = []
    count = bench.args.tasks
    env = bench.env.env(PYTHONPATH=str(report.ROOT))
    seconds, rss, pss = drain_with(cmd, queue, env, count, bench.logs / f"{queue}.log", cpu=cpu)
    ms = per_message_ms(cpu, count)
    key = queue.replace(".", "-")
    return [
        Row(f"{name}: no-op task", count / seconds, f"{detail}; {ms} ms CPU/msg", rss, key=key,
            extra={"cpu_ms_per_message": ms, "pss_mb": pss}),
        Row(f"worker RSS: {name}", rss, f"PSS {pss:.0f} MiB", key=f"{key}-rss", unit="MiB",
            baseline=PLAIN_RSS, better="lower", extra={"pss_mb": pss}),
    ]  # fmt: skip


def peer_rows(bench: Bench) -> list[Row]:
    """Dramatiq (2 processes x 1 thread) and FastStream (2 workers, no per-message logging),
    each moving the same no-op task over RabbitMQ: persistent messages, acked after the
    handler. Their own publishers fill the queue first; the worker is timed draining it."""
    import asyncio

    assert bench.env is not None
    count = bench.args.tasks
    os.environ["AMQP_URL"] = bench.env.amqp_url
    from bench import dramatiq_app, faststream_app

    for i in range(count):
        dramatiq_app.noop.send(i)
    dramatiq_app.dramatiq.get_broker().close()
    rows = _peer_row(
        bench, "Dramatiq 2 processes x 1 thread",
        [sys.executable, "-m", "dramatiq", "bench.dramatiq_app", "--processes", "2",
         "--threads", "1"],
        "peer.dramatiq", "persistent, ack after the actor, classic queue, default middleware",
    )  # fmt: skip
    asyncio.run(faststream_app.publish(count))
    rows += _peer_row(
        bench, "FastStream 2 workers",
        [sys.executable, "-m", "faststream", "run", "bench.faststream_app:app", "--workers",
         "2"],
        "peer.faststream", "persist=True, ack after the handler, classic queue, prefetch 8, "
        "per-message logging off",
    )  # fmt: skip
    return rows


def end_to_end_rows(bench: Bench) -> list[Row]:
    assert bench.env is not None
    a = bench.args
    return [end_to_end(bench.env, a.events, bench.worker_args, bench.logs,
                       "end to end: event -> e-mail")]  # fmt: skip


def cluster_rows(bench: Bench) -> list[Row]:
    """The end-to-end row again, the broker being the 3-node cluster (quorum queues
    replicated to 3 nodes); the cluster is brought up for the run and down after it."""
    subprocess.run(["bash", "infra/cluster.sh", "up"], check=True, stdout=subprocess.DEVNULL)
    try:
        cluster = bench.settings.model_copy(
            update={
                "amqp_url": ";".join(f"amqp://guest:guest@127.0.0.1:{p}//" for p in CLUSTER),
                "rabbitmq_management_url": ";".join(
                    f"http://guest:guest@127.0.0.1:{p + 10000}" for p in CLUSTER
                ),
            }
        )
        with bench_env(cluster) as env:
            a = bench.args
            return [end_to_end(env, a.events, bench.worker_args, bench.logs,
                               "end to end on 3-node cluster")]  # fmt: skip
    finally:
        subprocess.run(["bash", "infra/cluster.sh", "down"], check=False)


def pg_ha_rows(bench: Bench) -> list[Row]:
    """The end-to-end row again, the database being the 3-node Patroni cluster with
    synchronous replication (every commit waits for a standby: docs/deploy/postgresql-ha.md),
    its ratio to the single-server row of the same run; the cluster is up for the row only."""
    from infra.pg_ha import DATABASE_URL, pg_ha

    try:
        pg_ha("up")
        with bench_env(bench.settings.model_copy(update={"database_url": DATABASE_URL})) as env:
            label = "end to end on 3-node PostgreSQL, synchronous replication"
            row = end_to_end(env, bench.args.events, bench.worker_args, bench.logs, label)
    finally:
        pg_ha("down")
    row.baseline = "end to end: event -> e-mail"
    return [row]


def tracing_rows(bench: Bench) -> list[Row]:
    """The all-guarantees worker row with OpenTelemetry off and on (OTLP to a loopback
    receiver), rounds alternating: off against the stored row, on against off."""
    from bench.tracing import tracing_rows as measure

    assert bench.env is not None
    rows = measure(bench.env, bench.args.tasks, bench.worker_args, bench.logs)
    off, on = rows["off"], rows["on"]
    off.key, off.baseline = "tracing-off", "project-stored"
    on.key, on.baseline = "tracing-on", "tracing-off"
    return [off, on]


#: Where ``make bench`` leaves the flame graphs: beside its results, untracked.
FLAMES = report.SCRATCH.parent


def cpu_rows(found: dict, variant: str = "") -> list[Row]:
    """The signup bench's CPU row: ms of CPU per signup for each process kind and the whole
    system (its target beside it, in ms, not as a ratio). ``variant``: what differs from
    the system as ``make run`` starts it."""
    targets, per_event = found["targets_ms"], found.get("cpu_ms_per_event", {})
    suffix = f" ({variant})" if variant else ""
    key = "-".join(variant.split()[:2]) if variant else ""
    return [
        Row(f"CPU per signup: {kind}{suffix}", ms,
            f"{found['rate']:g} signups/s open loop, {found['answered']} signups"
            + (f"; {per_event[kind]:g} ms per event" if kind in per_event else "")
            + (f"; target <= {targets[kind]:g} ms" if kind in targets else ""),
            key=f"cpu-{kind.replace(' ', '-')}{'-' + key if key else ''}",
            unit="ms CPU/signup", baseline=None, better="lower",
            extra={"target_ms": targets.get(kind)})
        for kind, ms in found["cpu_ms_per_signup"].items()
        if not variant or kind in ("whole system", "notifier-worker", "reports-worker")
    ]  # fmt: skip


def signup_api_rows(bench: Bench) -> list[Row]:
    """``bench/signup.py`` (the whole system, open-loop signups, broker up, cut and hung;
    its own vhost and database): one row per phase, p99 latency in ms."""
    out = bench.logs / "signup.json"
    command = [sys.executable, "bench/signup.py", "--json", str(out), "--profile", str(FLAMES)]
    s = bench.settings  # the servers, not the private vhost and database of the other rows
    env = {**os.environ, "AMQP_URL": s.amqp_url, "DATABASE_URL": s.database_url,
           "RABBITMQ_MANAGEMENT_URL": s.rabbitmq_management_url}  # fmt: skip
    subprocess.run(command, cwd=report.ROOT, env=env, check=True)
    # What Flower's task view costs: the CPU row again, workers without -E and no Flower
    # (its own whole system; if that fails, the rows above still count).
    quiet = bench.logs / "signup-no-events.json"
    subprocess.run([sys.executable, "bench/signup.py", "--json", str(quiet), "--only-cpu",
                    "--no-events"], cwd=report.ROOT, env=env, check=False)  # fmt: skip
    found = json.loads(quiet.read_text()) if quiet.exists() else []
    rows = [row for one in found if "cpu_ms_per_signup" in one
            for row in cpu_rows(one, "no Flower, workers without -E")]  # fmt: skip
    for found in json.loads(out.read_text()):
        if "cpu_ms_per_signup" in found:
            rows += cpu_rows(found)
            continue
        if "p99_ms" not in found:  # the summary: the highest rate within the bound
            rows.append(Row(found["row"], found["rate"], "open loop, whole system running",
                            key="signup-best-rate", unit="signups/s", baseline=None))  # fmt: skip
            continue
        detail = (f"{found['rate']:g}/s open loop: p50 {found['p50_ms']:.0f} ms, "
                  f"answered {found['answered']}, errors {found['errors']}, "
                  f"e-mails {found.get('mails_delivered', 0)}")  # fmt: skip
        rows.append(Row(found["row"], found["p99_ms"], detail, key=found["row"],
                        unit="ms p99", baseline=None, better="lower", extra=found))  # fmt: skip
    return rows


#: (name, row function, runs in the run's private vhost and database): the order of the
#: table. A new row is a function added here; its rows' ``baseline`` names the row keyed
#: ``PLAIN`` (plain Celery tasks/s) or any other key to get a ratio.
ROWS: list[tuple[str, RowFunction, bool]] = [
    ("raw", raw_rows, True),
    ("plain", plain_rows, True),
    ("no-result", project_no_result_rows, True),
    ("peers", peer_rows, True),
    ("stored", project_stored_rows, True),
    ("end-to-end", end_to_end_rows, True),
    ("tracing", tracing_rows, True),
    ("signup-api", signup_api_rows, False),
    ("cluster", cluster_rows, False),
    ("pg-ha", pg_ha_rows, False),
]


def run_rows(bench: Bench, selected: list[tuple[str, RowFunction, bool]]) -> None:
    """Run each row function, printing when it starts and each row it gives when it ends."""
    for i, (name, function, _) in enumerate(selected, 1):
        print(f"[{i}/{len(selected)}] {name}: started {datetime.now(UTC):%H:%M:%S}", flush=True)
        start = time.perf_counter()
        try:
            new = function(bench)
        except Exception as exc:  # one broken row must not lose the others
            traceback.print_exc()
            print(f"[{i}/{len(selected)}] {name}: FAILED {exc!r}", flush=True)
            continue
        bench.rows += new
        ratios = {r["key"]: r["ratio"] for r in with_ratios(bench.rows)}
        for row in new:
            ratio = ratios[row.key]
            shown = f" ({ratio:.2f}x)" if ratio is not None else ""
            print(f"    {row.name}: {row.per_second:,.1f} {row.unit}{shown}", flush=True)
        print(f"[{i}/{len(selected)}] {name}: done in {time.perf_counter() - start:.1f} s",
              flush=True)  # fmt: skip


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: rows to run, their sizes, and where the results go."""
    names = [name for name, _, _ in ROWS]
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
    parser.add_argument("--only", default="", help=f"comma-separated rows of {names}")
    parser.add_argument("--out", type=Path, default=report.SCRATCH, help="results JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    names = [name for name, _, _ in ROWS]
    only = set(filter(None, args.only.split(","))) or set(names) - {"cluster"}
    if args.cluster:
        only.add("cluster")
    selected = [entry for entry in ROWS if entry[0] in only]
    bench = Bench(args, Settings(), Path(tempfile.mkdtemp(prefix="eventful-bench-")))
    summary = (f"{args.tasks} tasks/row, {args.messages} raw messages, {args.events} events, "
               f"pool {args.pool}, concurrency {args.concurrency}, prefetch multiplier "
               f"{args.prefetch}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"configuration: {summary}; quorum queues (raw and project), classic queue "
          f"(plain Celery); worker logs in {bench.logs}", flush=True)  # fmt: skip
    started = datetime.now(UTC)
    inside = [entry for entry in selected if entry[2]]
    if inside:
        with bench_env(bench.settings) as env:
            bench.env = env
            run_rows(bench, inside)
    run_rows(bench, [entry for entry in selected if not entry[2]])
    command = shlex.join(["python", "-m", "bench.run", *(argv or sys.argv[1:])])
    meta = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "configuration": {**{k: str(v) for k, v in vars(args).items()}, "summary": summary},
    }
    out = args.out.resolve()
    document = report.write(out, bench.rows, meta)
    png = report.chart(document, out.with_suffix(".png"))
    print("\n" + report.text_table(document))
    print(f"\nresults: {out}\nchart:   {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
