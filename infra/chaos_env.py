"""The chaos run's world: private servers, a fresh vhost and database, and its processes.

The run restarts its broker and database, so it never uses the machine's own
(127.0.0.1:5672, :5432), which other test runs share: ``infra/private_services.sh``
brings up a node ``chaos@localhost`` (AMQP 5690) and a PostgreSQL cluster ``chaos`` (5433).
Each run works in a vhost and database of its own, so servers kept with ``--keep`` (for
a look at the DLQs and tables afterwards) can be reused without one run's leftovers
counting in the next.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from kombu import Connection
from sqlalchemy.engine import make_url

from infra.processes import ROOT, Worker
from shared.core.db import migrate
from shared.core.topology import SERVICES, declare_all
from shared.ops.management import Management
from shared.worker.beat import libpq_url

SCRIPT = ROOT / "infra" / "private_services.sh"
LOCK = Path("/tmp/eventful-chaos.lock")
AMQP_BASE = "amqp://guest:guest@127.0.0.1:5690"
MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15690"
#: The private PostgreSQL cluster (``--pg-ha``: the Patroni cluster of infra/pg_ha.sh instead).
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5433/postgres"
#: Each worker as its deployment runs it (shared/ops/deployments.py), sized for 2 cores.
POOLS = {
    "notifier": ("--pool", "prefork", "--concurrency", "8"),
    "reports": ("--pool", "prefork", "--concurrency", "2"),
}


def private_services(command: str) -> None:
    """A command of ``infra/private_services.sh`` (``up``, ``down``, ``kill-rabbit``, ...)."""
    subprocess.run(["bash", str(SCRIPT), command], check=True, stdout=subprocess.DEVNULL)


class Busy(RuntimeError):
    """Another chaos run holds the private servers."""


@contextmanager
def exclusive(timeout: float) -> Iterator[None]:
    """One chaos run at a time on this machine (they share the private ports): wait up to
    ``timeout`` seconds for the one running to finish, else raise Busy."""
    deadline = time.monotonic() + timeout
    with open(LOCK, "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy(f"another chaos run holds {LOCK}") from None
                time.sleep(1.0)
        yield


@dataclass
class World:
    """Where this run's messages and rows live, and the environment every process gets."""

    run_id: str
    logs: Path
    smtp_port: int
    env: dict[str, str] = field(default_factory=dict)
    #: Where the run's database is created (SQLAlchemy URL of an existing database there).
    pg_server: str = PG_SERVER

    @property
    def vhost(self) -> str:
        return f"chaos-{self.run_id}"

    @property
    def amqp_url(self) -> str:
        return f"{AMQP_BASE}/{self.vhost}"

    @property
    def database_url(self) -> str:
        url = make_url(self.pg_server).set(database=f"chaos_{self.run_id}")
        return url.render_as_string(hide_password=False)

    def create(self) -> None:
        """Vhost and database, migrated and declared; the environment made this process's."""
        management = Management(MANAGEMENT_URL)
        management.put_vhost(self.vhost)
        management.grant(self.vhost, "guest")
        with psycopg.connect(libpq_url(self.pg_server), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "chaos_{self.run_id}"')
        self.env = {
            **os.environ,
            "AMQP_URL": self.amqp_url,
            "DATABASE_URL": self.database_url,
            "RABBITMQ_MANAGEMENT_URL": MANAGEMENT_URL,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "SMS_GATEWAY_URL": "http://127.0.0.1:9",  # not on this path; nothing listens
            "ADMIN_EMAILS": "",  # the welcome e-mail is the side effect counted
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(self.env)
        for name in SERVICES:
            migrate(self.database_url, name)
        with Connection(self.amqp_url) as conn:
            declare_all(conn)


class Fleet:
    """The processes under test: a notifier and a reports worker, and the signup outbox relay.

    The workers reach the broker at ``broker_url`` (through a proxy that can partition
    them from it); the relay, like the API it stands for, at the broker itself.
    """

    def __init__(self, world: World, broker_url: str | None = None) -> None:
        self.world = world
        self.worker_env = {**world.env, "AMQP_URL": broker_url or world.amqp_url}
        self.workers = {name: self._worker(name) for name in POOLS}
        self.relay: subprocess.Popen | None = None

    def _worker(self, name: str) -> Worker:
        return Worker(name, self.worker_env, self.world.logs, *POOLS[name])

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        log = open(self.world.logs / "signup-outbox-relay.log", "ab")  # noqa: SIM115
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "shared.ops", "outbox", "relay", "signup", "--interval", "0.2"],
            cwd=ROOT, env=self.world.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (main process and pool)."""
        self.workers[name].kill()

    def start_worker(self, name: str) -> None:
        self.workers[name] = self._worker(name).start()

    def dead(self) -> list[str]:
        """Processes that exited by themselves (each is a finding)."""
        gone = [n for n, w in self.workers.items() if w.proc and w.proc.poll() is not None]
        return gone + (
            ["signup-outbox-relay"] if self.relay and self.relay.poll() is not None else []
        )

    def pool_children_lost(self) -> int:
        """Pool processes that died under a worker (the run kills whole workers only)."""
        return sum(
            log.read_text(errors="replace").count("exited with '")
            for log in self.world.logs.glob("*-worker-*.log")
        )

    def stop(self) -> None:
        if self.relay is not None and self.relay.poll() is None:
            os.killpg(self.relay.pid, signal.SIGTERM)
            try:
                self.relay.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.relay.pid, signal.SIGKILL)
                self.relay.wait(10)
        for worker in self.workers.values():
            worker.stop()
