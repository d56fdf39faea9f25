"""``eventful task ID``: which service holds a task's result, and what it says.

Each service keeps its results in its own schema (``<service>.celery_taskmeta``), and an
``AsyncResult`` reads only the schema of the app it comes from: read through another
service's app, a finished task is PENDING, like an id nobody knows. This looks in every
service's schema.
"""

import json
from typing import Any

import click
from sqlalchemy import Engine, create_engine, text

from shared.core.settings import get_settings
from shared.core.topology import SERVICES

COLUMNS = "status, name, worker, retries, date_done, result, traceback"


def decoded(value: bytes | None) -> Any:
    """The stored result: the JSON the backend encoded (an exception as its dict)."""
    return None if value is None else json.loads(value)


def find(engine: Engine, task_id: str) -> list[dict[str, Any]]:
    """The task's row in each service's schema that has one (normally one service)."""
    found = []
    with engine.connect() as conn:
        for name in SERVICES:
            table = f"{name}.celery_taskmeta"
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
                continue
            query = text(f'SELECT {COLUMNS} FROM "{name}".celery_taskmeta WHERE task_id = :t')
            row = conn.execute(query, {"t": task_id}).mappings().first()
            if row is not None:
                found.append({"service": name, **row, "result": decoded(row["result"])})
    return found


def _text(row: dict[str, Any]) -> str:
    lines = [
        f"{row['service']}.celery_taskmeta: {row['status']}  task={row['name'] or '-'}"
        f"  worker={row['worker'] or '-'}  retries={row['retries']}"
        f"  done={row['date_done'] or '-'} UTC",
        f"result: {json.dumps(row['result'])}",
    ]
    if row["traceback"]:
        lines.append(f"traceback:\n{row['traceback']}")
    return "\n".join(lines)


@click.command("task")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def command(task_id: str, as_json: bool) -> int:
    """Where TASK_ID's result is (in whichever service's schema holds it), its state,
    result and traceback; exit 1 if no service has a row for it (PENDING: queued, or
    unknown)."""
    engine = create_engine(get_settings().database_url)
    try:
        found = find(engine, task_id)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
    else:
        for row in found:
            click.echo(_text(row))
    if not found:
        services = ", ".join(f"{name}.celery_taskmeta" for name in SERVICES)
        click.echo(f"{task_id}: no row in {services} (PENDING: queued, or unknown)", err=True)
    return 0 if found else 1
