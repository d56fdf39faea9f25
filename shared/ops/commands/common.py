"""What every command module shares: the ``--json`` option, printing it, the database, and
how an error is said (on stderr, exit 2)."""

import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine, create_engine

from shared.core.settings import get_settings

#: The ops schema's migrations (the dead-letter audit, replay claims).
OPS_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
AS_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def engine() -> Engine:
    return create_engine(get_settings().database_url)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
