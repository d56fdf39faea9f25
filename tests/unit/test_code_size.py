"""Issue 26, "Types and size": no production function over 50 lines, no module over 300.

ruff has no rule for either (its C90 bounds complexity, not length), so this walks the
syntax tree of every production module (shared/, services/, infra/; bench/ and tests/ are
not production) and names every offender, so a failure says what to split.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("shared", "services", "infra")
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 300


def production_modules() -> list[Path]:
    return sorted(path for top in PRODUCTION for path in (ROOT / top).rglob("*.py"))


def long_functions(path: Path, root: Path = ROOT) -> list[str]:
    """``path:line name (N lines)`` for each function or method longer than the bound,
    counted from its ``def`` (decorators not included) to its last line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root).as_posix()
    return [
        f"{where}:{node.lineno} {node.name} ({length} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES
    ]


def test_production_modules_are_found() -> None:
    """The walk sees the code it bounds (a wrong root would pass everything)."""
    found = {p.relative_to(ROOT).as_posix() for p in production_modules()}
    assert {"shared/worker/app.py", "services/signup/api.py", "infra/run.py"} <= found


def test_no_production_function_over_50_lines() -> None:
    offenders = [line for path in production_modules() for line in long_functions(path)]
    assert not offenders, "functions over 50 lines:\n" + "\n".join(offenders)


def test_no_production_module_over_300_lines() -> None:
    offenders = [
        f"{path.relative_to(ROOT).as_posix()} ({n} lines)"
        for path in production_modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not offenders, "modules over 300 lines:\n" + "\n".join(offenders)


@pytest.mark.parametrize("length, too_long", [(50, False), (51, True)])
def test_the_bound_is_counted_from_def_to_last_line(
    tmp_path: Path, length: int, too_long: bool
) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(length - 1))
    module = tmp_path / "probe.py"
    module.write_text(f"@decorator\ndef f():\n{body}\n")
    assert bool(long_functions(module, tmp_path)) is too_long
