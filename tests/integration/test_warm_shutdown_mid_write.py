"""A warm shutdown that comes while the worker is still writing a large task message into a
pool process's pipe ends, and loses nothing.

The prefork parent writes a task to a pool process a pipe-buffer (64 KiB) at a time, from
its event loop. Stopping the loop used to abandon the write half done: the pool process
waited for the rest of the message for ever, and the parent for it (``Pool.join``), as
the chaos run's 5 MiB bad input did in a database outage. Here the pool process is
stopped (SIGSTOP: scheduled out, as under load) so that the parent's write is certainly
partial when SIGTERM comes.
"""

import fcntl
import os
import signal
import subprocess
import termios
import uuid
from contextlib import suppress
from pathlib import Path

from tests.support import JSON, drain, envelope, framed, headers, publish_raw, wait_for

OVERSIZED = 5 * 1024 * 1024
#: Half a pipe's buffer (64 KiB): far more than any message but a task's is.
PARTIAL = 32 * 1024


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def fullest_pipe(pid: int) -> int:
    """The most bytes waiting in any pipe ``pid`` holds: what a writer put there and the
    process has not read (opening /proc/PID/fd/N of a pipe opens that same pipe)."""
    fullest = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        if not os.readlink(fd).startswith("pipe:"):
            continue
        own = os.open(fd, os.O_RDONLY | os.O_NONBLOCK)
        try:
            waiting = fcntl.ioctl(own, termios.FIONREAD, b"\0\0\0\0")
            fullest = max(fullest, int.from_bytes(waiting, "little"))
        finally:
            os.close(own)
    return fullest


def test_a_warm_shutdown_mid_write_to_a_pool_process_ends_and_loses_nothing(clean_queues):
    stack = clean_queues
    worker = stack.worker("reports", "--pool", "prefork", "--concurrency", "1").start()
    child = wait_for(lambda: children(worker.proc.pid))[0]
    event = envelope(f"big-{uuid.uuid4().hex[:6]}@example.com")
    event["payload"]["name"] = "x" * OVERSIZED  # over its contract: dead-lettered when run
    try:
        os.kill(child, signal.SIGSTOP)
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        # The parent has begun the write: the pipe is full, the rest of the message waits.
        wait_for(lambda: fullest_pipe(child) >= PARTIAL, timeout=60)
        worker.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "Warm shutdown" in worker.output(), timeout=30)
        os.kill(child, signal.SIGCONT)
        try:
            worker.proc.wait(60)  # a hang detector, not a timing target
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker hung in its warm shutdown") from None
    finally:
        with suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)
        worker.stop()
    dead = stack.dead_letters("reports")
    back = drain(stack.amqp_url, "reports.events")
    found = [(m.headers["id"], m.headers.get("x-dead-letter-reason")) for m in dead] + [
        (m.headers["id"], "requeued") for m in back
    ]
    assert found in ([(event["id"], "rejected")], [(event["id"], "requeued")])
