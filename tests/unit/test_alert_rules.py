"""The alert rules (infra/prometheus/alerts.yml) fire on what they are about and stay quiet
otherwise, by promtool's rule unit tests; the Grafana dashboard draws what they watch.

promtool comes with Debian's prometheus package, which ``make services`` installs."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra/prometheus/alerts.yml"
RULE_TESTS = ROOT / "tests/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "infra/grafana/eventful.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: `make services` installs Debian's prometheus package"
    return found


def alerts() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE)


def panel_expressions() -> dict[str, str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: t["expr"] for p in panels for t in p["targets"]}


def test_the_alert_rules_pass_their_promtool_unit_tests(promtool):
    result = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert set(alerts()) == tested
    assert set(alerts()) >= {
        "DeadLettersWaiting", "OutboxBehind", "WorkQueueWithoutConsumers", "BrokerDown",
        "RetriesHigh", "BeatLockNotHeld", "OutboxRowsParked",
    }  # fmt: skip


def test_every_dashboard_expression_parses(promtool, tmp_path):
    exprs = panel_expressions().values()
    recorded = [{"record": f"panel_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rules = {"groups": [{"name": "dashboard", "rules": recorded}]}
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps(rules))  # YAML reads JSON
    result = subprocess.run([promtool, "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_draws_what_every_alert_watches():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    drawn = {m for p in panels for m in re.findall(r"Alert: (\w+)", p.get("description", ""))}
    assert drawn == set(alerts())
