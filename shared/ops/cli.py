"""The operations CLI: ``eventful COMMAND`` (also ``python -m shared.ops COMMAND``).

Every command has ``--help``; listings take ``--json`` for scripts. Exit codes: 0 done,
1 something to act on (drift, nothing purged), 2 an error, said on stderr.
"""

import amqp.exceptions
import click
import sqlalchemy.exc
from kombu import Connection
from kombu.exceptions import OperationalError

from shared.core.settings import get_settings
from shared.ops import task
from shared.ops.commands import (
    contracts,
    dead_letters,
    migrate,
    outbox,
    topology,
    upstream,
    workers,
)
from shared.ops.commands.common import fail
from shared.ops.management import ManagementError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate an eventful system: migrations, broker topology, workers, dead letters,
    outboxes. Services come from EVENTFUL_SYSTEM (shared/core/system.py)."""


for module in (migrate, topology, workers, dead_letters, outbox, upstream, contracts):
    for command in module.COMMANDS:
        cli.add_command(command)
cli.add_command(task.command)


def main(argv: list[str] | None = None) -> int:
    try:
        return cli.main(args=argv, prog_name="eventful", standalone_mode=False) or 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say
        return 1
    except Exception as exc:
        said = _said(exc)
        if said is None:
            raise
        return fail(said)


def _said(exc: Exception) -> str | None:
    """What to tell the operator about ``exc`` (exit 2), or None: a bug, raised as is."""
    if isinstance(exc, KeyError):
        return str(exc.args[0])
    if isinstance(exc, amqp.exceptions.AccessRefused | amqp.exceptions.NotAllowed):
        return f"the broker refused access (check the user's permissions): {exc}"
    if isinstance(exc, amqp.exceptions.PreconditionFailed):
        return (
            f"the broker has it declared differently (see `topology plan`; a queue argument"
            f" changes only by deleting and recreating the queue): {exc}"
        )
    if isinstance(exc, amqp.exceptions.NotFound):
        return f"not on the broker (run `topology apply`): {exc}"
    if isinstance(exc, OperationalError | ConnectionError):
        url = Connection(get_settings().amqp_url.split(";")[0]).as_uri()
        return f"cannot reach the broker at {url}: {exc}"
    if isinstance(exc, ManagementError):
        return str(exc)
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return f"cannot reach PostgreSQL: {exc.orig}"
    if isinstance(exc, sqlalchemy.exc.ProgrammingError):
        return f"PostgreSQL refused (run `migrate`?): {exc.orig}"
    return None
