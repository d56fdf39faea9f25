"""The docs site keeps up with the code: every alert rule has its runbook entry (what it
means, what to do), and every page that holds a generated table renders from the code.
`mkdocs build --strict` (make lint) fails on a broken link, anchor or missing page."""

import re
from pathlib import Path

import pytest

from tests.docs import DOCS, hooks, rendered

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra/prometheus/alerts.yml"
RUNBOOK = DOCS / "operations/runbook.md"


def alert_rules() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE)


def runbook_entries() -> dict[str, str]:
    """Each ``## Name`` section of the runbook, by name."""
    parts = re.split(r"^## (\w+)\n", RUNBOOK.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_rule_has_a_runbook_entry_and_every_entry_a_rule():
    rules, entries = alert_rules(), runbook_entries()
    assert len(rules) >= 8
    assert sorted(rules) == sorted(entries), "alerts.yml and docs/operations/runbook.md differ"


@pytest.mark.parametrize("alert", alert_rules())
def test_each_runbook_entry_says_what_the_alert_means_and_what_to_do(alert):
    entry = runbook_entries().get(alert, "")
    assert "**What it means.**" in entry and "**What to do.**" in entry, alert


@pytest.mark.parametrize("alert", alert_rules())
def test_the_metrics_page_lists_each_alert(alert):
    assert f"| `{alert}` |" in (DOCS / "operations/metrics.md").read_text()


def test_each_generated_mark_names_a_generator_and_renders():
    marks = {m for p in DOCS.rglob("*.md") for m in hooks().MARK.findall(p.read_text())}
    assert marks == set(hooks().GENERATORS), "a generator no page uses, or a mark with none"
    for page in ("reference/cli.md", "reference/settings.md", "reference/events.md"):
        assert "<!-- generated:" not in rendered(page)


def test_the_reference_pages_show_what_the_code_has():
    assert "## `eventful dlq replay`" in rendered("reference/cli.md")
    assert "| `OUTBOX_MAX_ATTEMPTS` | `10` |" in rendered("reference/settings.md")
    assert "## `user.signed_up/v2`" in rendered("reference/events.md")
    assert "| raw AMQP publish (pipelined confirms) |" in rendered("performance.md")


def test_the_settings_reference_lists_every_sections_variable_with_its_meaning():
    from shared.core.settings import Settings

    page = rendered("reference/settings.md")
    for section in Settings.sections():
        assert f"### `settings.{section}`" in page
        for name, field in type(getattr(Settings(), section)).model_fields.items():
            variable = name.upper() + ("__<NAME>" if name == "service_passwords" else "")
            assert field.description and f"| `{variable}` |" in page, variable
            assert field.description.replace("|", "\\|") in page, variable


def test_the_readme_is_short_opens_with_the_two_commands_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first = readme.split("```", 2)[1].splitlines()[1:3]
    assert [line.split("#")[0].strip() for line in first] == ["make run", "make test"]
    links = re.findall(r"\]\(((?:docs|infra|tests)/[^)#]+)", readme)
    assert links and [link for link in links if not (ROOT / link).exists()] == []
