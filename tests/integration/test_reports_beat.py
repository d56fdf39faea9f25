"""Two beat processes started by mistake fire the schedule once; the standby takes over
when the holder dies; a firing the broker did not take is sent once it is back."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from infra.tcp_proxy import TcpProxy
from shared.worker.beat import libpq_url
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

    def start(**env: str) -> Beat:
        started.append(Beat(clean_queues, **{"HEARTBEAT_INTERVAL": "1", **env}))
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
    assert "scheduler -> shared.worker.beat.SingleBeatScheduler" in first.output()  # from app conf
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


@pytest.fixture
def broker_proxy(stack):
    proxy = TcpProxy.to(stack.amqp_url).start()
    yield proxy
    proxy.stop()


class Sent:
    """What beat published to ``reports.tasks`` so far, by task name (taken off the queue)."""

    def __init__(self, stack) -> None:
        self.stack, self.counts = stack, Counter()

    def __call__(self, task: str) -> int:
        messages = drain(self.stack.amqp_url, "reports.tasks")
        self.counts.update(m.headers["task"] for m in messages)
        return self.counts[task]


def store_last_runs(stack, **last_runs: datetime) -> None:
    """The schedule state a beat finds when it takes the lock (as a previous holder left it)."""
    with psycopg.connect(libpq_url(stack.database_url), autocommit=True) as conn:
        conn.execute("DELETE FROM reports.beat_entries")
        for name, at in last_runs.items():
            conn.execute(
                "INSERT INTO reports.beat_entries VALUES (%s, %s, 1)", (name.replace("_", "-"), at)
            )


def heartbeat_due_during_an_outage(stack, beats, broker_proxy) -> tuple[Beat, Sent]:
    """A beat, connected through the proxy, sends the overdue daily report; then the broker
    goes away and the hourly heartbeat falls due (in 12 s) while it is away."""
    now = datetime.now(UTC)
    store_last_runs(
        stack, daily_report=now - timedelta(days=2), heartbeat=now - timedelta(seconds=3588)
    )
    beat = beats(AMQP_URL=broker_proxy.url(stack.amqp_url), HEARTBEAT_INTERVAL="3600")
    sent = Sent(stack)
    wait_for(lambda: sent("reports.daily_report") == 1, timeout=30)
    broker_proxy.cut()
    wait_for(lambda: "Couldn't apply scheduled task heartbeat" in beat.output(), timeout=120)
    assert sent("reports.heartbeat") == 0
    return beat, sent


def test_a_firing_the_broker_did_not_take_is_sent_once_when_it_is_back(stack, beats, broker_proxy):
    beat, sent = heartbeat_due_during_an_outage(stack, beats, broker_proxy)

    broker_proxy.restore()
    wait_for(lambda: sent("reports.heartbeat") >= 1, timeout=20)
    time.sleep(3)  # three more ticks (--max-interval 1): nothing is sent a second time
    assert (sent("reports.heartbeat"), sent("reports.daily_report")) == (1, 1)
    assert beat.proc.poll() is None


def test_a_beat_taking_over_sends_the_firing_its_dead_holder_could_not_send_once(
    stack, beats, broker_proxy
):
    holder, sent = heartbeat_due_during_an_outage(stack, beats, broker_proxy)
    holder.kill()

    successor = beats(HEARTBEAT_INTERVAL="3600")  # straight to the broker
    wait_for(lambda: "holds the reports beat lock" in successor.output(), timeout=30)
    wait_for(lambda: sent("reports.heartbeat") >= 1, timeout=20)
    time.sleep(3)
    # The heartbeat the holder never sent, once; the daily report it sent, not again.
    assert (sent("reports.heartbeat"), sent("reports.daily_report")) == (1, 1)


def test_a_beat_started_while_the_broker_is_away_sends_the_overdue_run_once_it_is_back(
    stack, beats, broker_proxy
):
    """Not stuck connecting in ``tick`` (Celery's producer retries for minutes there): the
    overdue run is tried, left due, and sent by the beat's own loop."""
    store_last_runs(stack, daily_report=datetime.now(UTC) - timedelta(days=2))
    broker_proxy.cut()
    beat = beats(AMQP_URL=broker_proxy.url(stack.amqp_url), HEARTBEAT_INTERVAL="3600")
    wait_for(lambda: beat.output().count("Couldn't apply scheduled task daily-report") >= 2)

    broker_proxy.restore()
    sent = Sent(stack)
    wait_for(lambda: sent("reports.daily_report") >= 1, timeout=20)
    time.sleep(3)
    assert sent("reports.daily_report") == 1
