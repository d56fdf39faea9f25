"""Running the services' processes: what tests, the demo and `make run` share."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.core.topology import service as service_topology
from shared.ops.deployments import WORKERS

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Worker:
    """A real ``celery worker`` process of one service, in its own process group."""

    def __init__(self, service: str, env: dict[str, str], log_dir: Path, *extra: str) -> None:
        self.service, self.env, self.extra = service, env, extra
        self.log = log_dir / f"{service}-worker-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None
        self.command: list[str] | None = None
        queues = ",".join(q.name for q in service_topology(service).work_queues())
        self.argv = [
            "-A", WORKERS[service].app, "worker", "-Q", queues,
            "-n", f"{service}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle", "-l", "INFO", *extra,
        ]  # fmt: skip

    @classmethod
    def deployed(cls, service: str, env: dict[str, str], log_dir: Path) -> "Worker":
        """The worker exactly as deployed (``shared/ops/deployments.py``: its pool and
        concurrency), serving its metrics on a free port."""
        worker = cls(service, {**env, "METRICS_PORT": str(free_port())}, log_dir)
        worker.argv = WORKERS[service].argv()
        return worker

    @classmethod
    def as_operators_start_it(cls, service: str, env: dict[str, str], log_dir: Path) -> "Worker":
        """``python -m shared.ops worker SERVICE``: what make and the compose files run."""
        worker = cls(service, env, log_dir)
        worker.command = [sys.executable, "-m", "shared.ops", "worker", service]
        return worker

    def start(self, timeout: float = 60.0) -> "Worker":
        cmd = self.command or [sys.executable, "-m", "celery", *self.argv]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_for(lambda: b" ready." in self.log.read_bytes() or self.proc.poll() is not None,
                     timeout)  # fmt: skip
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()[-3000:]}")
        except BaseException:
            self.stop()  # a start that fails leaves nothing running: no caller holds it yet
            raise
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
