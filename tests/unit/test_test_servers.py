"""Where the tests find their servers (tests/infra.py): asked for containers (DOCKER_HOST
set, no server URLs), they get containers or an error, never the machine's own servers."""

from contextlib import ExitStack

import pytest

from tests import infra

URLS = ("AMQP_URL", "DATABASE_URL", "RABBITMQ_MANAGEMENT_URL", "RABBITMQ_METRICS_URL")


def test_an_engine_that_does_not_answer_is_an_error_not_the_local_servers(monkeypatch, tmp_path):
    for name in URLS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with ExitStack() as stack, pytest.raises(Exception) as raised:
        found = infra.servers(stack)
        pytest.fail(f"servers without the engine DOCKER_HOST names: {found}")
    assert "no-engine.sock" in str(raised.value) or raised.type.__module__.startswith("docker")


def test_server_urls_in_the_environment_win_over_an_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@broker.example:5672//")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@db.example/x")
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://u:p@broker.example:15672")
    with ExitStack() as stack:
        found = infra.servers(stack)
    assert (found.amqp_url, found.database_url) == (
        "amqp://u:p@broker.example:5672//",
        "postgresql+psycopg://u@db.example/x",
    )
