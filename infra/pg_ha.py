"""The Patroni cluster of ``infra/pg_ha.sh`` seen from Python: what the failover test and the
chaos run ask of it (who leads, kill it, bring it back, switch the replication mode)."""

import json
import subprocess
import urllib.request

import psycopg

from infra.processes import ROOT, wait_for

SCRIPT = ROOT / "infra" / "pg_ha.sh"
NODES = (1, 2, 3)
#: How every process reaches "the primary": libpq tries the hosts in order and keeps the
#: first that accepts writes. SQLAlchemy passes host and port lists to psycopg as they are.
DATABASE_URL = (
    "postgresql+psycopg://postgres@/postgres?host=127.0.0.1,127.0.0.1,127.0.0.1"
    "&port=5441,5442,5443&target_session_attrs=read-write"
)


def pg_ha(*args: str) -> None:
    """A command of ``infra/pg_ha.sh`` (``up``, ``down``, ``kill N``, ``start N``)."""
    subprocess.run(["bash", str(SCRIPT), *args], check=True, stdout=subprocess.DEVNULL)


def rest(node: int, path: str, method: str = "GET", body: dict | None = None) -> dict:
    """Patroni's REST API of ``node``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{8440 + node}{path}", data, method=method)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read() or b"{}")


def in_recovery(node: int) -> bool | None:
    """Whether ``node``'s PostgreSQL is a replica (None: it does not answer)."""
    try:
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{5440 + node}/postgres", connect_timeout=2
        ) as conn:
            return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError:
        return None


def leader() -> int:
    """The node whose PostgreSQL accepts writes (waits while there is none)."""
    return wait_for(lambda: next((n for n in NODES if in_recovery(n) is False), None), 60)


def set_synchronous(on: bool) -> None:
    """Patroni's ``synchronous_mode``, changed live; returns once the primary applies it
    (a synchronous standby named, or none)."""
    node = leader()
    rest(node, "/config", "PATCH", {"synchronous_mode": on})

    def applied() -> bool:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{5440 + node}/postgres") as conn:
            names = conn.execute("SHOW synchronous_standby_names").fetchone()[0]
        return bool(names) == on

    wait_for(applied, timeout=30)
