"""The measurements: raw AMQP, and draining N tasks through a real worker process."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import amqp
from kombu import Connection

from infra.processes import ROOT, wait_for


@dataclass
class Row:
    name: str
    per_second: float
    detail: str
    rss_mb: float | None = None


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
            if received["n"] % 100 == 0 or received["n"] == count:
                channel.basic_ack(message.delivery_tag, multiple=True)

        channel.basic_qos(0, 1000, False)
        start = time.perf_counter()
        channel.basic_consume(queue, callback=on_message)
        while received["n"] < count:
            conn.drain_events(timeout=10)
        consumed = time.perf_counter() - start
        channel.queue_delete(queue)
    return (
        Row("raw AMQP publish (confirms)", count / published, f"{count} persistent msgs"),
        Row("raw AMQP consume (manual ack)", count / consumed, "prefetch 1000"),
    )


def ready_messages(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the pool), in MiB."""
    out = subprocess.run(["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)],
                         capture_output=True, text=True).stdout  # fmt: skip
    return sum(int(x) for x in out.split()) / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its children (the pool)."""
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
    return total / os.sysconf("SC_CLK_TCK")


def drain_with_worker(
    app: str,
    queue: str,
    env: dict[str, str],
    count: int,
    worker_args: list[str],
    log: Path,
    done: Callable[[], bool] | None = None,
    cpu: list[float] | None = None,
) -> tuple[float, float]:
    """Start a worker on a queue holding ``count`` messages; seconds from its first message
    until ``done`` (default: the queue is empty), and the worker's RSS. ``cpu``: gets the
    CPU seconds the worker and its pool used in that time (its start-up left out)."""
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue, "-l", "WARNING",
           "--without-gossip", "--without-mingle", *worker_args]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready_messages(env["AMQP_URL"], queue) < count, timeout=60, interval=0.01)
        start, start_cpu = time.perf_counter(), cpu_seconds(proc.pid)
        wait_for(done or (lambda: ready_messages(env["AMQP_URL"], queue) == 0),
                 timeout=600, interval=0.02)  # fmt: skip
        elapsed = time.perf_counter() - start
        if cpu is not None:
            cpu.append(cpu_seconds(proc.pid) - start_cpu)
        memory = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return elapsed, memory
