"""Each worker runs as declared in shared/ops/deployments.py wherever it is written out."""

import json
import re

import pytest

from infra.processes import ROOT
from shared.ops.deployments import WORKERS


def flat(path: str) -> str:
    """The file with line continuations joined and whitespace collapsed."""
    return " ".join((ROOT / path).read_text().replace("\\\n", " ").split())


@pytest.mark.parametrize("service", sorted(WORKERS))
def test_make_worker_targets_run_the_declared_command(service):
    deployment = WORKERS[service]
    recipe = re.search(rf"worker-{service}: install (.*?) [\w-]+: install", flat("Makefile"))
    assert f"METRICS_PORT={deployment.metrics_port} {deployment.command()}" in recipe.group(1)


@pytest.mark.parametrize("service", sorted(WORKERS))
def test_the_compose_file_runs_the_declared_command(service):
    deployment = WORKERS[service]
    compose = flat("infra/docker-compose.yml")
    as_list = json.dumps(["celery", *deployment.argv()])
    assert as_list in compose or f"exec {deployment.command()}" in compose


def test_the_cluster_compose_file_runs_each_worker_on_its_declared_pool():
    lines = [
        line for line in (ROOT / "infra/docker-compose.cluster.yml").read_text().splitlines()
        if '"worker"' in line
    ]  # fmt: skip
    assert lines
    for line in lines:
        service = re.search(r'"services\.(\w+)\.app"', line).group(1)
        pool = re.search(r'"--pool", "(\w+)"', line)
        assert (pool.group(1) if pool else "prefork") == WORKERS[service].pool, line
