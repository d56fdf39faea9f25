"""The documentation as tests read it: a page as `mkdocs build` renders it (its generated
tables in place, docs/hooks.py), and a marked code block in it, which is what a reader
would type."""

import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@cache
def hooks() -> ModuleType:
    """docs/hooks.py, the build's generators (a file of docs/, not a package)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered(page: str) -> str:
    """``docs/<page>`` as the docs build renders it."""
    return hooks().render((DOCS / page).read_text())


def docs_block(page: str, name: str, language: str = "python") -> str:
    """The code block between ``docs/<page>``'s ``<!-- NAME: begin -->`` and ``end`` marks."""
    mark = re.escape(name)
    marks = f"<!-- {mark}: begin -->\n```{language}\n(.*?)```\n<!-- {mark}: end -->"
    found = re.search(marks, (DOCS / page).read_text(), re.S)
    assert found, f"no {language} block {name!r} in docs/{page}"
    return found.group(1)
