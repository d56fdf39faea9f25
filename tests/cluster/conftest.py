"""The same harness, on the 3-node cluster (`infra/cluster.sh up`); its own pytest session."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.conftest import Stack, build_stack
from tests.infra import Servers

AMQP_PORTS = (5681, 5682, 5683)
MANAGEMENT_PORTS = (15681, 15682, 15683)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    subprocess.run(["bash", "infra/cluster.sh", "up"], check=True, stdout=subprocess.DEVNULL)
    base = Servers(
        amqp_url=";".join(f"amqp://guest:guest@127.0.0.1:{p}//" for p in AMQP_PORTS),
        database_url=os.environ.get(
            "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        management_url=";".join(f"http://guest:guest@127.0.0.1:{p}" for p in MANAGEMENT_PORTS),
    )
    with ExitStack() as cleanup:
        yield build_stack(base, cleanup, tmp_path_factory.mktemp("logs"))


def rotated(urls: str, first: int) -> str:
    """The failover list starting at node ``first`` (0-based): where a worker connects."""
    parts = urls.split(";")
    return ";".join(parts[first:] + parts[:first])
