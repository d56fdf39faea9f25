"""Each worker runs as its service declares it, wherever it is started: the Makefile and
every compose file calls ``shared.ops worker SERVICE``, which runs the declared command."""

import os
import re

import pytest

from infra.processes import ROOT
from shared.ops import cli
from shared.ops.commands import workers
from shared.ops.deployments import WORKERS

COMPOSE_FILES = [
    "infra/docker-compose.yml", "infra/docker-compose.cluster.yml", "infra/docker-compose.pg-ha.yml"
]  # fmt: skip
#: A worker command written out instead of asked of its declaration.
WRITTEN_OUT = re.compile(r"celery\W+(-A\W+)?\S*\W+worker\b")


def flat(path: str) -> str:
    """The file with line continuations joined and whitespace collapsed."""
    return " ".join((ROOT / path).read_text().replace("\\\n", " ").split())


def test_make_runs_every_worker_through_its_declaration():
    makefile = flat("Makefile")
    assert "worker-%: install eventful worker $*" in makefile
    assert not WRITTEN_OUT.search(makefile)


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_each_compose_file_runs_every_declared_worker_and_writes_none_out(path):
    compose = flat(path)
    started = set(re.findall(r'shared\.ops"?,? "?worker"?,? "?([a-z]\w*)', compose))
    assert started == set(WORKERS)
    assert not WRITTEN_OUT.search(compose)


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_each_compose_worker_is_checked_by_pinging_its_own_node(path):
    """A container's healthcheck is `worker-alive` for the service and node it runs."""
    compose = flat(path)
    node = r'"?([a-z]\w*)"?(?:,? "?-n"?,? "?([^"\s]+))?'
    workers = re.findall(r'shared\.ops"?,? "?worker"?,? ' + node, compose)
    checks = re.findall(r'shared\.ops"?,? "?worker-alive"?,? ' + node, compose)
    assert workers and sorted(checks) == sorted(workers)


@pytest.mark.parametrize("service", sorted(WORKERS))
def test_the_worker_command_runs_the_declared_argv_with_its_metrics_port(service, monkeypatch):
    ran = []
    monkeypatch.delenv("METRICS_PORT", raising=False)
    monkeypatch.setattr(workers.os, "execve", lambda path, argv, env: ran.append((argv, env)))
    cli.main(["worker", service, "-n", "x@%h"])
    argv, env = ran[0]
    declared = WORKERS[service].argv()
    declared[declared.index("-n") + 1] = "x@%h"
    assert argv[argv.index("celery") + 1 :] == declared
    assert env["METRICS_PORT"] == str(WORKERS[service].metrics_port)
    assert "METRICS_PORT" not in os.environ, "the worker's environment, not this process's"


def test_the_worker_command_keeps_the_operators_metrics_port(monkeypatch):
    ran = []
    monkeypatch.setenv("METRICS_PORT", "9999")
    monkeypatch.setattr(workers.os, "execve", lambda path, argv, env: ran.append(env))
    cli.main(["worker", "reports"])
    assert ran[0]["METRICS_PORT"] == "9999"


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_every_port_a_compose_file_publishes_binds_loopback_only(path):
    """The management UI (guest/guest), PostgreSQL, the API, Flower: none on every interface."""
    compose = flat(path)
    assert not re.search(r"^\s*ports:\s*$", (ROOT / path).read_text(), re.M), "inline lists only"
    published = [p for ports in re.findall(r"ports: \[([^\]]*)\]", compose)
                 for p in re.findall(r'"([^"]*)"', ports)]  # fmt: skip
    assert published
    assert [p for p in published if not p.startswith("127.0.0.1:")] == []
