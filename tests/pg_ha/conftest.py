"""The same harness, its database on the 3-node Patroni cluster (`infra/pg_ha.sh up`); its
own pytest session (`make test-pg-ha`). The cluster is removed again whatever the outcome."""

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from infra.pg_ha import DATABASE_URL, pg_ha
from shared.core.settings import Settings
from tests.conftest import Stack, build_stack
from tests.infra import Servers


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    defaults = Settings.model_fields
    base = Servers(
        amqp_url=os.environ.get("AMQP_URL") or defaults["amqp_url"].default,
        database_url=DATABASE_URL,
        management_url=os.environ.get("RABBITMQ_MANAGEMENT_URL")
        or defaults["rabbitmq_management_url"].default,
    )
    try:
        pg_ha("up")
        with ExitStack() as cleanup:
            yield build_stack(base, cleanup, tmp_path_factory.mktemp("logs"))
    finally:
        pg_ha("down")
