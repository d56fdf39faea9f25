"""`make run` starts a Prometheus that scrapes every worker and RabbitMQ's exporter, evaluates
the alert rules, and can draw every panel of the Grafana dashboard."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from shared.ops.deployments import WORKERS
from tests.service_users import make_run
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, ranges, numbers
    and grouping clauses removed; what remains is a name unless a call or a keyword)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b\d+(\.\d+)?[smhdwy]*\b", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = re.findall(r"([A-Za-z_:][\w:]*)\s*(\(?)", expr)
    return {name for name, call in tokens if not call and name not in KEYWORDS}


def expressions() -> list[str]:
    panels = json.loads((ROOT / "infra/grafana/eventful.json").read_text())["panels"]
    rules = (ROOT / "infra/prometheus/alerts.yml").read_text()
    return [t["expr"] for p in panels for t in p["targets"]] + re.findall(r"expr: (.+)", rules)


def declared_names() -> set[str]:
    """What shared.ops.metrics declares (a counter not yet counted has no sample to scrape), read
    in a process of its own: importing it sets prometheus_client's multiprocess mode."""
    code = (
        "import shared.ops.metrics; from prometheus_client import REGISTRY\n"
        "print('\\n'.join(f'{m.name} {m.type}' for m in REGISTRY.collect()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    return {name + suffix for line in out.stdout.splitlines()
            for name, kind in [line.split()] for suffix in suffixes.get(kind, [""])}  # fmt: skip


def test_make_run_starts_prometheus_with_every_worker_and_the_broker_up(stack, creds, tmp_path):
    with make_run(stack, creds, tmp_path) as run:
        ports, output = run.ports, run.output
        api = f"http://127.0.0.1:{ports['prometheus']}/api/v1"
        printed = f"Prometheus        http://127.0.0.1:{ports['prometheus']}/targets"
        assert any(line.startswith(printed) for line in output), "".join(output)

        def all_up() -> list[dict] | None:
            targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            workers = [t for t in targets if t["labels"]["job"] == "eventful-workers"]
            ok = len(workers) == len(WORKERS) and all(t["health"] == "up" for t in targets)
            return targets if ok else None

        targets = wait_for(all_up, timeout=45, interval=1)
        rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        answers = {e: httpx.get(f"{api}/query", params={"query": e}, timeout=5).json()
                   for e in expressions()}  # fmt: skip
        scraped = set(httpx.get(f"{api}/label/__name__/values", timeout=5).json()["data"])
    jobs = sorted((t["labels"]["job"], t["labels"].get("service", "")) for t in targets)
    assert jobs == sorted([("rabbitmq", "")] + [("eventful-workers", s) for s in WORKERS])
    assert [r["name"] for r in rules[0]["rules"]] == re.findall(
        r"- alert: (\w+)", (ROOT / "infra/prometheus/alerts.yml").read_text()
    )
    failed = {e: a for e, a in answers.items() if a["status"] != "success"}
    assert failed == {}
    unknown = {n for e in expressions() for n in metric_names(e)} - scraped - declared_names()
    assert unknown == set(), "the dashboard and the alerts read only metrics that exist"
    assert list((tmp_path / "metrics-targets").glob("*.json")) == [], "stopped workers unregister"
