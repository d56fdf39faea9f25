"""Per-service broker users and database roles on the session's vhost and database, and
what a `make run` on them leaves behind, removed."""

import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, create_engine, make_url, text

from shared.core.topology import SERVICES
from shared.ops.management import Management
from shared.ops.permissions import CredentialSettings
from tests.support import free_port, wait_for


@pytest.fixture(scope="module")
def creds(stack) -> CredentialSettings:
    """This module's own users and roles (both are global), applied to the session's vhost
    and database by the CLI, then removed."""
    prefix = f"t{uuid.uuid4().hex[:6]}_"
    env = {**stack.env, "SERVICE_USER_PREFIX": prefix}
    applied = subprocess.run(
        [sys.executable, "-m", "shared.ops", "topology", "apply"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    yield CredentialSettings(service_user_prefix=prefix)
    remove_service_identities(stack, prefix)


def remove_service_identities(stack, prefix: str, names: Iterable[str] = SERVICES) -> None:
    """The broker users and database roles ``topology apply`` made under ``prefix``, gone:
    both are global, so a test that leaves them leaves them on the shared servers for good.
    What a role owns in the session's database passes to the admin before it is dropped."""
    management = Management(stack.management_url)
    admin = make_url(stack.database_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        for name in names:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (prefix + name,)).rowcount:
                role = sql.Identifier(prefix + name)
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                conn.execute(sql.SQL("DROP ROLE {}").format(role))
            if management.user(prefix + name):
                management.delete_user(prefix + name)


def ops_as(stack, creds: CredentialSettings, *args: str) -> subprocess.CompletedProcess:
    """``python -m shared.ops ARGS`` under this module's user prefix; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "shared.ops", *args],
        env={**stack.env, "SERVICE_USER_PREFIX": creds.service_user_prefix},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def upstream(stack, creds: CredentialSettings) -> Iterator[str]:
    """The AMQP URL of an upstream made with ``eventful upstream add crm --publishes
    user.signed_up``: it may publish that event type and nothing else."""
    added = ops_as(stack, creds, "upstream", "add", "crm", "--publishes", "user.signed_up")
    yield re.search(r"^AMQP_URL=(\S+)$", added.stdout, re.MULTILINE).group(1)
    ops_as(stack, creds, "upstream", "remove", "crm")


def beat_entries(admin: Engine) -> list[dict]:
    rows = "SELECT name, last_run_at, total_run_count FROM reports.beat_entries"
    with admin.connect() as db:
        return [dict(r) for r in db.execute(text(rows)).mappings()]


def leave_no_trace(stack, admin, beat_before: list[dict]) -> None:
    """What the run's beat and workers left behind, gone: later tests start as before it."""
    queues = [q.name for topo in SERVICES.values() for q in topo.work_queues()]
    stack.purge(*queues, *[topo.dlq for topo in SERVICES.values()])
    with admin.begin() as db:
        db.execute(text("DELETE FROM reports.beat_entries"))
        for row in beat_before:
            db.execute(
                text(
                    "INSERT INTO reports.beat_entries (name, last_run_at, total_run_count)"
                    " VALUES (:name, :last_run_at, :total_run_count)"
                ),
                row,
            )
    admin.dispose()


@dataclass
class Running:
    ports: dict[str, str]
    output: list[str]


@contextmanager
def make_run(stack, creds: CredentialSettings, logs: Path) -> Iterator[Running]:
    """What `make run` starts (``infra/run.py``), as the per-service users, on free ports,
    until its "ready" line; then Ctrl-C, a clean exit asserted, and what it left removed."""
    names = ("api", "smtp", "sms", "flower", "metrics", "prometheus")
    ports = {name: str(free_port()) for name in names}
    admin = create_engine(stack.database_url)
    beat_before = beat_entries(admin)
    env = {**stack.env, "SERVICE_USER_PREFIX": creds.service_user_prefix}
    runner = subprocess.Popen(
        [sys.executable, "-m", "infra.run", "--logs", str(logs),
         *[arg for name, port in ports.items() for arg in (f"--{name}-port", port)]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(runner.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("ready: Ctrl-C" in line for line in output), timeout=120)
        yield Running(ports, output)
    finally:
        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 0, "".join(output)[-3000:]
        leave_no_trace(stack, admin, beat_before)
        reader.join(5)
