"""The primary PostgreSQL server is SIGKILLed while signups flow through the API and the
workers run; Patroni promotes a replica; nothing the API answered 201 is lost.

Every process reaches the primary through the multi-host URL (``infra/pg_ha.py``): no
process is restarted, each replaces its dead connections itself. Measured and printed
(``make test-pg-ha`` runs pytest with ``-s``): how long the API answered 503, and how long
until events flowed again. Checked by independent evidence: the SMTP sink's inbox, the
reports read model, the outbox and the result rows, read from the new primary.
"""

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from infra.pg_ha import in_recovery, leader, pg_ha, set_synchronous
from infra.processes import ROOT, free_port
from tests.support import wait_for

#: Signups answered 201 on the new primary before the clients stop.
AFTER_RECOVERY = 20


@dataclass
class Answer:
    email: str
    status: int  # 0: no HTTP answer at all
    at: float
    retry_after: str | None


@dataclass(eq=False)  # a Thread: hashable by identity
class Signups(threading.Thread):
    """One client signing users up back to back through the API, every answer recorded."""

    url: str
    tag: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(name=f"signups-{self.tag}", daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for i in range(100_000):
                if self.stop.is_set():
                    return
                email = f"{self.tag}-{i}@example.com"
                try:
                    answer = client.post("/users/signup", json=new_user(email))
                    status, retry_after = answer.status_code, answer.headers.get("retry-after")
                except httpx.TransportError:
                    status, retry_after = 0, None
                self.answers.append(Answer(email, status, time.monotonic(), retry_after))
                self.stop.wait(0.05)

    def accepted(self) -> list[str]:
        return [a.email for a in self.answers if a.status == 201]

    def after(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.at > moment]


@pytest.fixture
def served(stack, gateway, tmp_path):
    """``uvicorn services.signup.api:app`` as deployed, on the HA database URL, texting
    the verification codes to the gateway stub."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "services.signup.api:app", "--port", str(port)]
    with open(tmp_path / "api.log", "wb") as log:
        env = {**stack.env, "API_TOKEN": "pg-ha", "SMS_GATEWAY_URL": gateway.url}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def new_user(email: str) -> dict[str, str]:
    return {"email": email, "name": "HA", "phone": "+821012345678"}


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def fleet(stack):
    """A notifier and a reports worker, the signup outbox relay and one beat (heartbeat
    every second), all on the HA URL; result rows committed durably (they are counted)."""
    env = {"RESULT_SYNCHRONOUS_COMMIT": "true", "HEARTBEAT_INTERVAL": "1"}
    workers = [stack.worker("notifier", **env).start(), stack.worker("reports", **env).start()]
    logs = {
        name: stack.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log" for name in ("relay", "beat")
    }
    commands = {
        "relay": ["-m", "shared.ops", "outbox", "relay", "signup", "--interval", "0.2"],
        "beat": ["-m", "celery", "-A", "services.reports.app", "beat", "-l", "INFO",
                 "--max-interval", "1"],
    }  # fmt: skip
    procs = {}
    for name, args in commands.items():
        with open(logs[name], "wb") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env={**stack.env, **env}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    try:
        yield workers, procs, logs
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)
        for worker in workers:
            worker.stop()


def scalar(engine, sql: str, **params) -> int:
    """Read from whichever server is the primary now (a failed read is tried again)."""

    def read():
        try:
            with engine.connect() as conn:
                return (conn.execute(text(sql), params).scalar_one(),)
        except OperationalError:  # no primary yet
            return None

    return wait_for(read, timeout=60)[0]


def fail_over(stack, api: str, tag: str) -> tuple[Signups, int]:
    """Signups flowing; SIGKILL of the primary; signups go on until the new primary has
    taken ``AFTER_RECOVERY`` of them. The timings are printed. Returns the signups and the
    node killed."""
    signups = Signups(api, tag)
    signups.start()
    wait_for(lambda: len(signups.accepted()) >= 20, timeout=60)
    killed = leader()
    killed_at = time.monotonic()
    pg_ha("kill", str(killed))

    def recovered() -> Answer | None:
        failed = [a for a in signups.after(killed_at) if a.status != 201]
        if not failed:
            return None
        return next((a for a in signups.after(failed[-1].at) if a.status == 201), None)

    first_201 = wait_for(recovered, timeout=120, interval=0.1)
    flowing = wait_for(lambda: stack.smtp.to(first_201.email), timeout=120, interval=0.05)
    flowed_at = time.monotonic()
    assert flowing
    wait_for(lambda: sum(a.status == 201 for a in signups.after(flowed_at)) >= AFTER_RECOVERY, 60)
    signups.stop.set()
    signups.join(60)

    refused = [a for a in signups.after(killed_at) if a.status != 201]
    windows = {
        "503 answers": len([a for a in refused if a.status == 503]),
        "503 first..last (s)": refused[-1].at - refused[0].at,
        "kill -> first 201 (s)": first_201.at - killed_at,
        "kill -> events flowing (s)": flowed_at - killed_at,
    }
    print(f"\npg-ha failover ({tag}): primary pg{killed} killed; "
          + ", ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
                      for k, v in windows.items()))  # fmt: skip
    assert {a.status for a in refused} == {503}, Counter(a.status for a in refused)
    assert all(a.retry_after for a in refused), "every 503 carries Retry-After"
    return signups, killed


def lost_signups(engine, accepted: list[str]) -> list[str]:
    """Signups answered 201 whose user is not on the primary now."""
    stored = set()
    for start in range(0, len(accepted), 500):
        batch = accepted[start : start + 500]
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT email FROM signup.users WHERE email = ANY(:e)"), {"e": batch}
            )
            stored.update(r[0] for r in rows)
    return [e for e in accepted if e not in stored]


def facts_of(engine, emails: list[str]) -> Counter:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT subject FROM reports.facts WHERE type = 'user.signed_up'"
                 " AND subject = ANY(:e)"), {"e": emails},
        )  # fmt: skip
        return Counter(r[0] for r in rows)


def rejoins_and_keeps_working(stack, api: str, engine, killed: int, tag: str) -> None:
    """The killed server comes back as a replica (rewound where it had diverged), and
    signups still go all the way."""
    pg_ha("start", str(killed))
    pg_ha("up")  # returns once the primary streams to both replicas
    assert in_recovery(killed) is True
    emails = [f"{tag}-after-{i}@example.com" for i in range(3)]
    with httpx.Client(base_url=api, timeout=30) as client:
        for email in emails:
            assert client.post("/users/signup", json=new_user(email)).status_code == 201
    wait_for(lambda: all(len(stack.smtp.to(e)) == 1 for e in emails), timeout=60)
    wait_for(lambda: sum(facts_of(engine, emails).values()) == 3, timeout=60)


def test_with_synchronous_replication_no_signup_answered_201_is_lost(stack, served, fleet):
    from contracts import GenerateReport
    from services.reports.app import service as reports

    workers, procs, logs = fleet
    set_synchronous(True)
    engine = create_engine(stack.database_url, pool_pre_ping=True)
    wait_for(lambda: "holds the reports beat lock" in logs["beat"].read_text(), timeout=60)
    reports.send(GenerateReport(kind="daily", day=date.today()))  # a chord through the kill

    signups, killed = fail_over(stack, served, "sync")
    accepted = signups.accepted()
    assert lost_signups(engine, accepted) == []
    wait_for(lambda: all(stack.smtp.to(e) for e in accepted), timeout=180, interval=1)
    everyone = [a.email for a in signups.answers]
    assert {e: n for e in everyone if (n := len(stack.smtp.to(e))) > 1} == {}
    wait_for(lambda: sum(facts_of(engine, accepted).values()) >= len(accepted), timeout=120)
    assert {e: n for e, n in facts_of(engine, everyone).items() if n > 1} == {}
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM signup.outbox"
                            " WHERE published_at IS NULL") == 0, timeout=60)  # fmt: skip
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM reports.reports WHERE kind = 'daily'"
                            " AND day = :d", d=date.today()), timeout=180)  # fmt: skip

    # The beat lock vanished with the old primary: the beat took it again on the new one,
    # and every firing it recorded ran once (the heartbeat's result rows).
    wait_for(lambda: logs["beat"].read_text().count("holds the reports beat lock") >= 2, 60)
    procs["beat"].terminate()
    procs["beat"].wait(30)
    fired = scalar(engine, "SELECT total_run_count FROM reports.beat_entries"
                   " WHERE name = 'heartbeat'")  # fmt: skip
    ran = "SELECT count(*) FROM reports.celery_taskmeta WHERE name = 'reports.heartbeat'"
    wait_for(lambda: scalar(engine, ran) >= fired, timeout=60)
    assert scalar(engine, ran) == fired
    assert [w.proc.poll() for w in workers] == [None, None], "workers reconnect, not exit"
    assert procs["relay"].poll() is None, "the outbox relay reconnects, not exits"

    rejoins_and_keeps_working(stack, served, engine, killed, "sync")
    engine.dispose()


def test_with_asynchronous_replication_the_signups_lost_are_counted(stack, served, fleet):
    set_synchronous(False)
    engine = create_engine(stack.database_url, pool_pre_ping=True)
    try:
        signups, killed = fail_over(stack, served, "async")
        accepted = signups.accepted()
        lost = lost_signups(engine, accepted)
        print(f"pg-ha failover (async): {len(lost)} of {len(accepted)} signups answered 201 lost")
        kept = [e for e in accepted if e not in lost]
        wait_for(lambda: all(stack.smtp.to(e) for e in kept), timeout=180, interval=1)
        everyone = [a.email for a in signups.answers]
        assert {e: n for e in everyone if (n := len(stack.smtp.to(e))) > 1} == {}
        rejoins_and_keeps_working(stack, served, engine, killed, "async")
    finally:
        set_synchronous(True)
        engine.dispose()
