"""What a chord depends on survives a PostgreSQL crash, and a chord never waits forever.

A chord on the database backend completes only when ``celery.chord_unlock`` reads every
header task's row as done. Those rows are committed durably; other result rows are not
(``synchronous_commit=off``), and an immediate stop of PostgreSQL loses the last of them.
A member that never reports (its row lost, its message dead-lettered without a result)
ends the chord after ``chord_timeout``: its body fails and the unlock message goes to the
DLQ with a ``ChordTimeout``.
"""

import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from shared.core.db import migrate
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]

#: A client applying a chord whose second member never reaches a worker: it goes straight
#: to the DLQ, as a message RabbitMQ dead-letters natively (its delivery limit) would, so
#: no result row is ever written for it (a worker's dead letters write FAILURE rows).
LOST_MEMBER = """
import json
from celery import chord
from celery.exceptions import ChordError
from services.reports.app import app
app.conf.chord_timeout = 3  # the producer sets the bound: chord_unlock's max_retries
lost = app.signature("reports.add", (9, 9)).set(exchange="reports.dlx", routing_key="x")
header = [app.signature("reports.add", (1, 1)), lost, app.signature("reports.add", (2, 2))]
result = chord(header, app.signature("reports.sum_results")).apply_async()
try:
    outcome = repr(result.get(timeout=60, interval=0.1))
except ChordError as exc:
    outcome = f"ChordError: {exc}"
print(json.dumps({"body": result.id, "lost": result.parent.results[1].id, "outcome": outcome}))
"""

#: A chord, then a plain task, each waited for; their ids.
CHORD_THEN_PLAIN = """
import json
from celery import chord
from services.reports.app import app
add, total = app.tasks["reports.add"], app.tasks["reports.sum_results"]
result = chord([add.s(i, i) for i in range(3)], total.s()).apply_async()
assert result.get(timeout=30, interval=0.05) == 6
plain = add.delay(20, 22)
assert plain.get(timeout=30, interval=0.05) == 42
print(json.dumps({"members": [r.id for r in result.parent.results], "plain": plain.id}))
"""


def client(env: dict[str, str], script: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def result_states(database_url: str, *task_ids: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT task_id, status FROM reports.celery_taskmeta WHERE task_id = ANY(:t)"),
                {"t": list(task_ids)},
            )
            return dict(rows.all())
    finally:
        engine.dispose()


def test_a_chord_with_a_member_that_never_reports_ends_in_the_dlq_after_its_timeout(
    clean_queues,
):
    stack = clean_queues
    worker = stack.worker("reports").start()
    try:
        ids = client(stack.env, LOST_MEMBER)
    finally:
        worker.stop()
    dead = {m.headers["id"]: m.headers for m in stack.dead_letters("reports")}

    assert ids["outcome"].startswith("ChordError"), ids  # the caller is told, not left waiting
    [unlock] = [h for h in dead.values() if h["task"] == "celery.chord_unlock"]
    assert unlock["x-exception-type"] == "ChordTimeout", unlock["x-exception-message"]
    assert unlock["x-dead-letter-reason"] == "chord-timeout"
    assert ids["lost"] in unlock["x-exception-message"]
    assert "1 of 3 header tasks" in unlock["x-exception-message"]
    assert "x-dead-letter-reason" not in dead[ids["lost"]]  # the member, as it was sent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster this test may crash (never the shared one on 5432).

    Its WAL writer is paused (SIGSTOP): a commit made with ``synchronous_commit=off`` then
    stays in shared memory until a durable commit flushes the WAL, so what an immediate
    stop loses is exactly the asynchronous commits made since the last durable one.
    """

    def __init__(self, root: Path) -> None:
        self.data, self.port = root / "data", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/eventful"

    def pg(self, *args: str, check: bool = True) -> None:
        """A PostgreSQL program, as the postgres user (initdb refuses to run as root)."""
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check,
                       capture_output=True)  # fmt: skip

    def create(self) -> None:
        self.pg(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": self.port,
            "unix_socket_directories": f"'{self.data}'", "autovacuum": "off",
            "checkpoint_timeout": "'1h'", "bgwriter_lru_maxpages": 0, "fsync": "on",
        }  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.start()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres") as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE eventful")

    def start(self) -> None:
        log = self.data.parent / "postgres.log"
        self.pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "start")

    def pause_wal_writer(self) -> None:
        postmaster = (self.data / "postmaster.pid").read_text().split()[0]
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", postmaster],
                             capture_output=True, text=True).stdout  # fmt: skip
        [pid] = [line.split()[0] for line in out.splitlines() if "walwriter" in line]
        os.kill(int(pid), signal.SIGSTOP)  # killed with the others at the immediate stop

    def stop(self, mode: str, check: bool = True) -> None:
        self.pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                check=check)  # fmt: skip


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with tempfile.TemporaryDirectory(prefix="eventful-pg-") as root:
        postgres = pwd.getpwnam("postgres")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
        server = PrivatePostgres(Path(root))
        try:  # stopped even if it started and then its setup failed
            server.create()
            yield server
        finally:
            server.stop("immediate", check=False)


@pytest.mark.slow
def test_chord_member_results_survive_an_immediate_stop_of_postgresql(
    clean_queues, private_postgres
):
    stack, pg = clean_queues, private_postgres
    migrate(pg.url, "reports")
    env = {**stack.env, "DATABASE_URL": pg.url}
    pg.pause_wal_writer()
    worker = stack.worker("reports", **{"DATABASE_URL": pg.url}).start()
    try:
        ids = client(env, CHORD_THEN_PLAIN)
    finally:
        worker.stop()

    pg.stop("immediate")  # a crash: no shutdown checkpoint, shared memory gone
    pg.start()
    after = result_states(pg.url, *ids["members"], ids["plain"])

    assert [after.get(m) for m in ids["members"]] == ["SUCCESS"] * 3
    # The plain task's row was committed without waiting for the WAL flush, after the last
    # durable commit: the crash took it (the price of its speed; no workflow waits on it).
    assert after.get(ids["plain"]) != "SUCCESS"
