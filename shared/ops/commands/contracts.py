"""``eventful contracts write|check``: the contracts as committed documents."""

import sys
from pathlib import Path

import click

from shared.contracts import documents as contract_docs


@click.group("contracts")
def contracts_group() -> None:
    """The contracts as documents: a JSON Schema per event version and command, and the
    system's AsyncAPI 3.0 document (shared/contracts/documents.py)."""


CONTRACTS_DIR = click.option(
    "--dir", "directory", default="contracts", show_default=True, type=click.Path(path_type=Path)
)


@contracts_group.command("write")
@CONTRACTS_DIR
def cmd_contracts_write(directory: Path) -> int:
    """Regenerate the documents; refuses to break a published contract (exit 1)."""
    try:
        written = contract_docs.write(directory)
    except contract_docs.BreakingChange as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {directory / path}")
    print(f"{len(written)} document(s) changed")
    return 0


@contracts_group.command("check")
@CONTRACTS_DIR
def cmd_contracts_check(directory: Path) -> int:
    """Exit 1 if the code breaks a published contract or the documents are stale."""
    problems = contract_docs.breaks(directory) + contract_docs.drift(directory)
    for line in problems:
        print(line)
    if problems:
        print(f"to regenerate: {contract_docs.REGENERATE}")
    return 1 if problems else 0


COMMANDS = (contracts_group,)
