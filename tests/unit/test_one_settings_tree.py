"""One settings tree: ``shared.core.settings.Settings`` is the only pydantic-settings class in
the platform, its sections keep the variable names operators set, and nothing writes
``os.environ`` (a child process gets its configuration from its parent's settings or from the
environment it is started with, never from a variable written behind the reader's back) but
for one library that takes its setting from nowhere else: prometheus_client's multiprocess
values read their directory from ``PROMETHEUS_MULTIPROC_DIR`` alone."""

import ast
from pathlib import Path

import pytest

from shared.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for top in ("shared", "services") for p in (ROOT / top).rglob("*.py"))


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environ_writes(tree: ast.AST) -> list[int]:
    """Lines that assign, delete or mutate ``os.environ`` (or call ``os.putenv``/``unsetenv``)."""
    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = getattr(node, "targets", None) or [node.target]  # type: ignore[attr-defined]
        if any(_is_environ(getattr(t, "value", t)) for t in targets):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            mutates = node.func.attr in ("setdefault", "update", "pop", "popitem", "clear")
            if (mutates and _is_environ(node.func.value)) or node.func.attr in (
                "putenv",
                "unsetenv",
            ):
                lines.append(node.lineno)
    return sorted(lines)


#: Each write allowed, with the line it must be: a library with no other way in.
FOR_A_LIBRARY = {"shared/ops/metrics.py": 'os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY'}


def test_nothing_in_the_platform_or_a_service_writes_os_environ_but_for_a_library():
    found = {}
    for path in SOURCES:
        text = path.read_text()
        for line in environ_writes(ast.parse(text)):
            found[f"{path.relative_to(ROOT)}"] = text.splitlines()[line - 1].strip()
    assert found == FOR_A_LIBRARY


def test_the_check_sees_each_way_of_writing_the_environment():
    code = (
        "os.environ['A'] = '1'\nos.environ.setdefault('B', '2')\ndel os.environ['C']\n"
        "os.environ.update(D='4')\nos.putenv('E', '5')\nx = os.environ.get('F')\n"
    )
    assert environ_writes(ast.parse(code)) == [1, 2, 3, 4, 5]


def test_settings_is_the_platforms_only_pydantic_settings_class():
    classes = [
        f"{path.relative_to(ROOT)}:{node.name}"
        for path in SOURCES
        if path.is_relative_to(ROOT / "shared")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(getattr(b, "id", getattr(b, "attr", None)) == "BaseSettings" for b in node.bases)
    ]
    assert classes == ["shared/core/settings.py:Settings"]


@pytest.fixture
def clean_env(monkeypatch):
    """No variable of any section set, whatever the shell running the tests has."""
    for section in Settings.sections():
        for name in type(getattr(Settings(), section)).model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_the_sections_read_the_variables_operators_already_set(clean_env, tmp_path):
    for name, value in {
        "METRICS_PORT": "9199",
        "METRICS_ADDR": "0.0.0.0",
        "METRICS_TARGETS_DIR": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m"),
        "SERVICE_USER_PREFIX": "staging-",
        "SERVICE_PASSWORDS__NOTIFIER": "s3cret",
        "OTEL_SERVICE_NAME": "api",
        "OTEL_TRACES_EXPORTER": "console",
    }.items():
        clean_env.setenv(name, value)
    settings = Settings()
    assert (settings.metrics.metrics_port, settings.metrics.metrics_addr) == (9199, "0.0.0.0")
    assert settings.metrics.metrics_targets_dir == tmp_path
    assert settings.metrics.prometheus_multiproc_dir == tmp_path / "m"
    assert settings.permissions.user("notifier") == "staging-notifier"
    assert settings.permissions.password("notifier") == "s3cret"
    assert settings.permissions.password("signup") == "signup-local"
    assert settings.tracing.otel_service_name == "api"
    assert settings.tracing.exporters() == ["console"]


def test_unset_the_sections_take_their_defaults(clean_env):
    settings = Settings()
    assert settings.metrics.metrics_port == 9808
    assert settings.metrics.prometheus_multiproc_dir is None
    assert settings.permissions.service_passwords == {}
    assert settings.tracing.exporters() == []


def test_a_section_given_in_code_keeps_what_the_environment_says_of_the_rest(clean_env):
    clean_env.setenv("SERVICE_PASSWORDS__SIGNUP", "x")
    settings = Settings(permissions={"service_user_prefix": "t-"})
    assert (settings.permissions.user("signup"), settings.permissions.password("signup")) == (
        "t-signup",
        "x",
    )
