"""`eventful worker-alive SERVICE`: what a container HEALTHCHECK or systemd calls. It exits 0
when this host's worker of the service answers within the time given, and non-zero within
that time when the worker hangs; it works with the service's own broker user."""

import os
import signal
import subprocess
import sys
import time


def eventful(env: dict[str, str], *args: str) -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shared.ops", *args],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def worker_alive(env: dict[str, str], timeout: float) -> tuple[int, float, str]:
    return eventful(env, "worker-alive", "notifier", "--timeout", str(timeout))


def test_a_worker_that_answers_is_alive_and_a_stopped_one_is_not_within_the_timeout(stack, creds):
    worker = stack.deployed_worker("notifier").start()  # node notifier@<this host>
    as_notifier = {**stack.env, "AMQP_URL": creds.amqp_url("notifier", stack.amqp_url)}
    try:
        alive = worker_alive(as_notifier, timeout=10)
        os.killpg(worker.proc.pid, signal.SIGSTOP)
        try:
            stopped = worker_alive(as_notifier, timeout=3)
        finally:
            os.killpg(worker.proc.pid, signal.SIGCONT)
    finally:
        worker.stop()
    gone = worker_alive(as_notifier, timeout=3)
    start_up = eventful(as_notifier, "--help")[1]  # the interpreter and the CLI's imports

    assert alive[0] == 0 and "alive" in alive[2], alive
    assert stopped[0] == 1 and "no answer within 3s" in stopped[2], stopped
    # The timeout bounds it: 3 s, the interpreter's start, and a margin for a loaded machine
    # (start-up is measured once, at another moment; on 2 busy cores it varies severalfold).
    assert stopped[1] < 3 + 4 * start_up + 6, f"took {stopped[1]:.1f}s (start-up {start_up:.1f}s)"
    assert gone[0] == 1, gone
