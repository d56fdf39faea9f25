"""Two beat processes started by mistake fire the schedule once; the standby takes over
when the holder dies."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import drain, wait_for

ROOT = Path(__file__).resolve().parents[2]


class Beat:
    """A real ``celery -A services.reports.app beat`` process, in its own process group."""

    def __init__(self, stack, **env: str) -> None:
        self.log = stack.log_dir / f"reports-beat-{uuid.uuid4().hex[:6]}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "services.reports.app", "beat",
               "-l", "INFO", "--max-interval", "1"]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env={**stack.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)


@pytest.fixture
def beats(clean_queues):
    started: list[Beat] = []

    def start() -> Beat:
        started.append(Beat(clean_queues, HEARTBEAT_INTERVAL="1"))
        return started[-1]

    yield start
    for beat in started:
        beat.stop()


def heartbeats_sent(stack) -> int:
    """Take the heartbeats beat sent to ``reports.tasks`` (no worker runs them here)."""
    return sum(
        m.headers["task"] == "reports.heartbeat" for m in drain(stack.amqp_url, "reports.tasks")
    )


def heartbeats_during(stack, seconds: float) -> int:
    drain(stack.amqp_url, "reports.tasks")
    time.sleep(seconds)
    return heartbeats_sent(stack)


def test_two_beats_fire_each_heartbeat_once_and_the_standby_takes_over(stack, beats):
    first = beats()
    wait_for(lambda: "holds the reports beat lock" in first.output(), timeout=30)
    assert "scheduler -> shared.beat.SingleBeatScheduler" in first.output()  # from app conf
    second = beats()
    wait_for(lambda: "standing by" in second.output(), timeout=30)

    # Every second, by one beat: 5 s give 5 heartbeats (3 to 6 on a loaded machine); two
    # firing beats would send 8 or more.
    assert 3 <= heartbeats_during(stack, 5) <= 6
    assert "Sending due task heartbeat" in first.output()
    assert "Sending due task" not in second.output()

    first.kill()
    wait_for(lambda: "holds the reports beat lock" in second.output(), timeout=15)
    assert 3 <= heartbeats_during(stack, 5) <= 6
    assert "Sending due task heartbeat" in second.output()
