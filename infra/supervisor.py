"""Keeping `make run`'s processes running, as a deployment's process manager would.

A process that exits is restarted after a backoff that doubles with each recent exit
(``backoff``, 2x, 4x, ... at most ``MAX_BACKOFF``), and the supervisor says so. A process
that exits more than ``restarts`` times within ``window`` seconds is not going to get
better by itself: then everything stops and the exit code is 1. Each process runs in its
own process group, so what a dead process leaves behind (a prefork worker's children) is
killed before it is started again, and stopping signals the whole group.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from infra.processes import ROOT

MAX_BACKOFF = 30.0


@dataclass
class Program:
    """One long-running process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    echo: bool = False  # output to the supervisor's stdout instead of a log file
    proc: subprocess.Popen | None = None
    exits: deque[float] = field(default_factory=deque)  # when it exited, recent ones
    restart_at: float | None = None

    def start(self, base_env: dict[str, str], logs: Path) -> None:
        out = None if self.echo else open(logs / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env={**base_env, **self.env}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        if out is not None:
            out.close()  # the child has its own copy

    def signal(self, sig: int) -> None:
        """Signal the process group, also after its leader died (what it left behind)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)


class Supervisor:
    def __init__(
        self, programs: list[Program], logs: Path, env: dict[str, str],
        out: TextIO | None = None, restarts: int = 5, window: float = 60.0,
        backoff: float = 1.0,
    ) -> None:  # fmt: skip
        self.programs, self.logs, self.env = programs, logs, env
        self.out = out or sys.stdout
        self.restarts, self.window, self.backoff = restarts, window, backoff
        self.failed: str | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start(self) -> "Supervisor":
        for program in self.programs:
            program.start(self.env, self.logs)
        return self

    def check(self) -> bool:
        """One look at every process: note exits, restart those whose backoff is over.
        False once a process failed too often (``failed`` says which)."""
        now = time.monotonic()
        for program in self.programs:
            exited = program.restart_at is None and program.proc.poll() is not None
            if exited and not self._exited(program, now):
                return False
            if program.restart_at is not None and now >= program.restart_at:
                program.restart_at = None
                program.start(self.env, self.logs)
                self.say(f"{program.name} restarted (pid {program.proc.pid})")
        return True

    def _exited(self, program: Program, now: float) -> bool:
        program.signal(signal.SIGKILL)  # its children, if it left any
        program.exits.append(now)
        while program.exits[0] < now - self.window:
            program.exits.popleft()
        code, times = program.proc.returncode, len(program.exits)
        if times > self.restarts:
            self.failed = (
                f"{program.name} exited {times} times within {self.window:g}s;"
                f" stopping everything (see {self.logs})"
            )
            self.say(self.failed)
            return False
        delay = min(MAX_BACKOFF, self.backoff * 2 ** (times - 1))
        program.restart_at = now + delay
        self.say(
            f"{program.name} exited ({code}); restarting in {delay:g}s"
            f" ({times} of {self.restarts} restarts within {self.window:g}s)"
        )
        return True

    def run(self, stopping: Callable[[], object], interval: float = 0.5) -> int:
        """Supervise until ``stopping()`` (0) or a process keeps failing (1)."""
        while not stopping():
            if not self.check():
                return 1
            time.sleep(interval)
        return 0

    def stop(self, grace: float) -> None:
        """SIGTERM every process group, SIGKILL what is still there after ``grace`` s."""
        for program in reversed(self.programs):
            if program.proc is not None and program.proc.poll() is None:
                program.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for program in self.programs:
            if program.proc is None:
                continue
            try:
                program.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                program.signal(signal.SIGKILL)
                program.proc.wait(10)
