"""The tutorial (docs/tutorial.md) followed as written, in a copy of the checkout: its files
written where it says, the contracts regenerated, and what `make test` would then check of
them passes (ruff, the import layers, the new test, contracts, routing, the platform naming
no service). The copy's servers part (`make run`, a signup, the points row) was followed by
hand."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"<!-- tutorial: (write|append) (\S+) -->\n```python\n(.*?)```\n", re.S)
#: The unit tests a new service and a new event touch.
CHECKS = [
    "tests/unit/test_loyalty.py",
    "tests/unit/test_contract_documents.py",
    "tests/unit/test_contract_bounds.py",
    "tests/unit/test_contract_compatibility.py",
    "tests/unit/test_platform_names_no_service.py",
    "tests/unit/test_contracts_and_routing.py",
    "tests/unit/test_cli.py",
]


def run(copy: Path, *argv: str) -> str:
    done = subprocess.run(argv, cwd=copy, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The checkout's tracked files, with the tutorial's blocks applied."""
    copy = tmp_path_factory.mktemp("tutorial")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    blocks = BLOCK.findall(TUTORIAL.read_text())
    assert len(blocks) == 6
    for how, path, code in blocks:
        target = copy / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(target.read_text() + "\n\n" + code if how == "append" else code)
    for name in ("env.py", "script.py.mako"):  # the tutorial's `cp`
        shutil.copy2(ROOT / "services/notifier/migrations" / name,
                     copy / "services/loyalty/migrations" / name)  # fmt: skip
    return copy


def test_the_tutorials_contract_becomes_a_document(copy):
    out = run(copy, sys.executable, "-m", "shared.ops", "contracts", "write")
    assert "wrote contracts/events/points.granted/v1.json" in out
    run(copy, sys.executable, "-m", "shared.ops", "contracts", "check")


def test_the_tutorials_service_is_declared_with_its_worker(copy):
    out = run(copy, sys.executable, "-m", "shared.ops", "workers")
    assert "celery -A services.loyalty.app worker -Q loyalty.tasks,loyalty.events" in out


def test_the_tutorials_code_passes_ruff_and_the_checks_make_test_runs_on_it(copy):
    ruff = str(Path(sys.executable).with_name("ruff"))
    run(copy, ruff, "check", "services", "contracts", "tests/unit")
    run(copy, ruff, "format", "--check", "services", "contracts", "tests/unit")
    run(copy, str(Path(sys.executable).with_name("lint-imports")))
    run(copy, sys.executable, "-m", "shared.ops", "contracts", "write")
    run(copy, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CHECKS)
