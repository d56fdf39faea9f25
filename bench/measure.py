"""The measurements: raw AMQP, and draining N tasks through a real worker process; and
``Row``, the one shape every row of ``make bench`` has (in the run, in the JSON, in the
docs' table and in the chart)."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import amqp
from kombu import Connection

from infra.processes import ROOT, wait_for

#: Row keys the ratios refer to: plain Celery's tasks/s, publish rate and worker RSS.
PLAIN = "plain"
PLAIN_PUBLISH = "plain-publish"
PLAIN_RSS = "plain-rss"


@dataclass
class Row:
    """One measured figure. ``name`` says exactly what was measured (the label the docs
    and the chart show); ``per_second`` is the figure in ``unit``; its ratio is taken to the
    row keyed ``baseline`` in the same run (None: no ratio). ``better`` says which way is
    good ("higher" for rates, "lower" for memory and latency); ``target``, the ratio the
    row must reach (at least, or at most when lower is better). ``rss_mb``: the worker's
    resident memory (main process and its pool children) while it ran, when there was
    one. ``extra``: any further figures (p50/p99, counts), JSON values only."""

    name: str
    per_second: float
    detail: str = ""
    rss_mb: float | None = None
    key: str = ""
    unit: str = "tasks/s"
    baseline: str | None = PLAIN
    better: str = "higher"
    target: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def with_ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """Each row as JSON with ``ratio``: its figure over its baseline row's (None when it
    has no baseline, or the baseline did not run)."""
    by_key = {row.key: row for row in rows}
    out = []
    for row in rows:
        base = by_key.get(row.baseline) if row.baseline else None
        ratio = row.per_second / base.per_second if base and base.per_second else None
        out.append({**row.to_json(), "ratio": ratio})
    return out


def raw_amqp(amqp_url: str, count: int, queue: str = "bench.raw") -> tuple[Row, Row]:
    """Persistent messages to a quorum queue: publish with confirms (pipelined), then consume
    with manual acks. The broker's ceiling on this machine."""
    body = b'{"n": 1}'
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, auto_delete=False,
                              arguments={"x-queue-type": "quorum"})  # fmt: skip
        channel.confirm_select()
        acked = {"tag": 0}
        channel.events["basic_ack"].add(
            lambda tag, multiple: acked.__setitem__("tag", max(acked["tag"], tag))
        )
        start = time.perf_counter()
        for _ in range(count):
            channel.basic_publish(amqp.Message(body, delivery_mode=2), "", queue)
        while acked["tag"] < count:
            conn.drain_events(timeout=10)
        published = time.perf_counter() - start

        received = {"n": 0}

        def on_message(message):
            received["n"] += 1
            channel.basic_ack(message.delivery_tag)  # one ack per message, as a worker acks

        channel.basic_qos(0, 1000, False)
        start = time.perf_counter()
        channel.basic_consume(queue, callback=on_message)
        while received["n"] < count:
            conn.drain_events(timeout=10)
        consumed = time.perf_counter() - start
        channel.queue_delete(queue)
    return (
        Row("raw AMQP publish (pipelined confirms)", count / published,
            f"{count} persistent messages, quorum queue", key="raw-publish", unit="msgs/s"),
        Row("raw AMQP consume (one ack per message)", count / consumed,
            "prefetch 1000", key="raw-consume", unit="msgs/s"),
    )  # fmt: skip


def ready_messages(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the pool), in MiB."""
    out = subprocess.run(["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)],
                         capture_output=True, text=True).stdout  # fmt: skip
    return sum(int(x) for x in out.split()) / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its children (the pool),
    those it has already reaped included (an autoscaled pool's children come and go)."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if p == pid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
    return total / os.sysconf("SC_CLK_TCK")


def pss_mb(pid: int) -> float:
    """Proportional memory of a process and its children: each page shared after fork
    counted once in all, where RSS counts it in every process."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid), "-p", str(pid)],
                         capture_output=True, text=True).stdout  # fmt: skip
    total = 0
    for child in out.split():
        try:
            rollup = Path(f"/proc/{child}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in rollup.splitlines()
                     if line.startswith("Pss:"))  # fmt: skip
    return total / 1024


def drain_with_worker(
    app: str,
    queue: str,
    env: dict[str, str],
    count: int,
    worker_args: list[str],
    log: Path,
    done: Callable[[], bool] | None = None,
    cpu: list[float] | None = None,
) -> tuple[float, float, float]:
    """Start a Celery worker on a queue holding ``count`` messages: ``drain_with``."""
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue, "-l", "WARNING",
           "--without-gossip", "--without-mingle", *worker_args]  # fmt: skip
    return drain_with(cmd, queue, env, count, log, done, cpu)


def drain_with(
    cmd: list[str],
    queue: str,
    env: dict[str, str],
    count: int,
    log: Path,
    done: Callable[[], bool] | None = None,
    cpu: list[float] | None = None,
) -> tuple[float, float, float]:
    """Start a worker (``cmd``: Celery's or a peer's) on a queue holding ``count`` messages;
    seconds from its first message until ``done`` (default: the queue is empty), and the
    worker's RSS and PSS. ``cpu``: gets the CPU seconds the worker and its processes used in
    that time (its start-up left out)."""
    # One connection for all the polling: a new one per poll (a full AMQP handshake, 50
    # times a second) loads the broker being measured, and times out on a busy machine.
    with Connection(env["AMQP_URL"]) as conn:
        channel = conn.channel()

        def ready() -> int:
            return channel.queue_declare(queue, passive=True).message_count

        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for(lambda: ready() < count, timeout=60, interval=0.01)
            start, start_cpu = time.perf_counter(), cpu_seconds(proc.pid)
            wait_for(done or (lambda: ready() == 0), timeout=600, interval=0.02)
            elapsed = time.perf_counter() - start
            if cpu is not None:
                cpu.append(cpu_seconds(proc.pid) - start_cpu)
            memory = rss_mb(proc.pid), pss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    return elapsed, *memory
