"""The deployment page (docs/deploy/containers.md) cannot drift from what `make
compose-demo` runs: each service of infra/docker-compose.yml has its row there with the
command and health check the file gives it, and the page names no other; each Dockerfile
it lists takes its base as the build argument BASE, defaulting to the public image the page
names. The Prometheus of the compose file scrapes each declared worker on its port."""

import re
import shlex

import pytest
import yaml

from infra.processes import ROOT
from shared.ops.deployments import WORKERS

COMPOSE = ROOT / "infra/docker-compose.yml"
PROMETHEUS = ROOT / "infra/prometheus/compose.yml"
PAGE = ROOT / "docs/deploy/containers.md"


def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def code(argv: list[str] | str) -> str:
    """A command as the page shows it: one shell line, in backticks."""
    argv = [argv] if isinstance(argv, str) else argv
    return "`" + shlex.join(" ".join(arg.split()) for arg in argv) + "`"


def row(name: str, spec: dict) -> str:
    """The start of ``name``'s row in the page's table, from the compose file."""
    command = code(spec["command"]) if "command" in spec else "(the image's)"
    check = code(spec["healthcheck"]["test"][1:]) if "healthcheck" in spec else "(the image's)"
    return f"| `{name}` | {command} | {check} |"


def table(marker: str) -> list[str]:
    """The rows of the page's table after ``<!-- marker -->``."""
    text = PAGE.read_text()
    lines = text[text.index(f"<!-- {marker} -->") :].splitlines()[1:]
    rows = [line for line in lines[: lines.index("")] if line.startswith("| `")]
    assert rows, f"no table after <!-- {marker} -->"
    return rows


def test_every_compose_service_has_its_row_with_its_command_and_health_check():
    rows = table("compose services")
    expected = [row(name, spec) for name, spec in compose_services().items()]
    missing = [e for e in expected if not any(r.startswith(e) for r in rows)]
    assert missing == [], "rows to write in the page:\n" + "\n".join(missing)


def test_the_page_names_no_service_the_compose_file_lacks():
    named = [re.match(r"\| `([\w-]+)`", r).group(1) for r in table("compose services")]
    assert sorted(named) == sorted(compose_services())


def test_each_dockerfile_takes_its_base_as_a_build_argument_defaulting_to_the_public_image():
    rows = table("images")
    for line in rows:
        dockerfile, base = re.match(r"\| `[^`]+` \| `([^`]+)` \| `([^`]+)` \|", line).groups()
        text = (ROOT / dockerfile).read_text()
        assert f"ARG BASE={base}\n" in text, dockerfile
        assert all(f.startswith("FROM ${BASE}") for f in re.findall(r"^FROM .*", text, re.M))
    dockerfiles = {str(p.relative_to(ROOT)) for p in ROOT.glob("infra/**/*Dockerfile")}
    assert {re.match(r"\| `[^`]+` \| `([^`]+)`", r).group(1) for r in rows} == dockerfiles


@pytest.mark.parametrize("service", sorted(WORKERS))
def test_compose_prometheus_scrapes_each_worker_container_on_its_declared_port(service):
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "eventful-workers"]
    discovered = {n: sd["port"] for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert discovered[f"{service}-worker"] == WORKERS[service].metrics_port
    assert f"{service}-worker" in compose_services()


def test_compose_prometheus_has_the_jobs_the_alerts_watch():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    alerts = (ROOT / "infra/prometheus/alerts.yml").read_text()
    assert set(re.findall(r'job="([\w-]+)"', alerts)) == jobs
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert "./prometheus:/etc/prometheus:ro" in compose_services()["prometheus"]["volumes"]
