"""The README's code, as tests run it: a block is what a reader would type."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(name: str, language: str = "python") -> str:
    """The code block between the README's ``<!-- NAME: begin -->`` and ``end`` marks."""
    mark = re.escape(name)
    marks = f"<!-- {mark}: begin -->\n```{language}\n(.*?)```\n<!-- {mark}: end -->"
    found = re.search(marks, README.read_text(), re.S)
    assert found, f"no {language} block {name!r} in the README"
    return found.group(1)
