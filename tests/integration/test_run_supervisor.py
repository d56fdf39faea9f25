"""`make run` supervises its processes as a deployment's process manager would: a crashed
process is restarted (with backoff, and says so), a process that keeps failing stops all."""

import io
import os
import signal
import sys
import threading

import pytest

from infra.supervisor import Program, Supervisor
from tests.support import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
FAILING = [sys.executable, "-c", "import sys; sys.exit(3)"]


@pytest.fixture
def supervise(tmp_path):
    """A supervisor of real processes with short backoff; every process stopped afterwards."""
    supervisors = []

    def make(*programs: Program, restarts: int = 3) -> Supervisor:
        supervisor = Supervisor(
            list(programs), tmp_path, dict(os.environ), out=io.StringIO(),
            restarts=restarts, window=30.0, backoff=0.1,
        )  # fmt: skip
        supervisors.append(supervisor)
        return supervisor.start()

    yield make
    for supervisor in supervisors:
        supervisor.stop(grace=5)


def pids(supervisor: Supervisor) -> dict[str, int]:
    return {p.name: p.proc.pid for p in supervisor.programs}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_process_is_restarted_and_the_others_keep_running(supervise):
    supervisor = supervise(*(Program(name, SLEEPER) for name in ("api", "worker", "beat")))
    before = pids(supervisor)
    stopping = threading.Event()
    runner = threading.Thread(target=lambda: supervisor.run(stopping.is_set, interval=0.05))
    runner.start()
    try:
        os.kill(before["worker"], signal.SIGKILL)
        wait_for(lambda: pids(supervisor)["worker"] != before["worker"], timeout=10)
        wait_for(lambda: "worker restarted" in supervisor.out.getvalue(), timeout=5)
    finally:
        stopping.set()
        runner.join(10)

    after = pids(supervisor)
    assert after["api"] == before["api"] and after["beat"] == before["beat"]
    assert alive(after["worker"]) and alive(after["api"]) and alive(after["beat"])
    said = supervisor.out.getvalue()
    assert "worker exited (-9); restarting in 0.1s" in said, said
    assert f"worker restarted (pid {after['worker']})" in said, said


def test_a_process_that_keeps_failing_stops_everything_with_exit_1(supervise):
    supervisor = supervise(Program("api", SLEEPER), Program("crasher", FAILING), restarts=3)
    api = pids(supervisor)["api"]

    assert supervisor.run(lambda: False, interval=0.05) == 1

    said = supervisor.out.getvalue()
    assert said.count("crasher restarted") == 3, said
    assert "crasher exited 4 times within 30s; stopping everything" in said, said
    supervisor.stop(grace=5)
    assert not alive(api)


def test_restarts_back_off_exponentially(supervise):
    supervisor = supervise(Program("crasher", FAILING), restarts=3)
    supervisor.run(lambda: False, interval=0.05)

    said = supervisor.out.getvalue()
    assert [line.split("restarting in ")[1].split("s")[0] for line in said.splitlines()
            if "restarting in" in line] == ["0.1", "0.2", "0.4"]  # fmt: skip
