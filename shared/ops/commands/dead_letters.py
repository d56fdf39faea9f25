"""``eventful dlq list|show|replay|purge``: dead letters, read with their reasons."""

import getpass
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shared.core.settings import get_settings
from shared.core.topology import service
from shared.ops import dlq, replay
from shared.ops.commands.common import AS_JSON, engine, print_json


def _letter_line(letter: dlq.DeadLetter) -> str:
    h = letter.headers
    return (
        f"{letter.task_id:<36}  {letter.task}  {h.get('x-dead-letter-reason', 'x-death')}"
        f"  attempts={h.get('x-attempts', '?')}  at={h.get('x-dead-lettered-at', '?')}"
        f"  result={letter.status or '-'}  correlation={letter.correlation_id or '-'}"
        f"  causation={letter.causation_id or '-'}  {h.get('x-exception-type', '')}:"
        f" {str(h.get('x-exception-message', ''))[:80]}"
    )


def _letterprint_json(letter: dlq.DeadLetter) -> dict[str, Any]:
    return {
        "task_id": letter.task_id,
        "origin": letter.origin,
        "correlation_id": letter.correlation_id,
        "causation_id": letter.causation_id,
        "headers": letter.headers,
        "status": letter.status,
        "result": letter.result,
        "body": str(letter.message.body),
    }


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: list, show, replay, purge."""


ID = click.option("--id", "ids", multiple=True, help="only this task id (repeatable)")
PAGE = [
    click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
                 help="show at most N dead letters"),
    click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
                 help="skip the first N (the next page: --offset OFFSET+LIMIT)"),
]  # fmt: skip


Command = TypeVar("Command", bound=Callable[..., Any])


def _paged(command: Command) -> Command:
    """``command`` with the ``--limit``/``--offset`` paging options."""
    for option in reversed(PAGE):
        command = option(command)
    return command


def _read(
    service_name: str, ids: tuple[str, ...], show: bool, as_json: bool, offset: int, limit: int
) -> int:
    """One page of dead letters, read by one pass around the DLQ (``dlq.listed``)."""
    topo, settings = service(service_name), get_settings()
    page = dlq.listed(
        settings.amqp_url, topo, offset=offset, limit=limit,
        keep=lambda letter: not ids or letter.task_id in ids,
    )  # fmt: skip
    letters = page.letters
    dlq.join_results(engine(), topo, letters)
    if as_json:
        print_json([_letterprint_json(letter) for letter in letters])
        return 0
    shown = f"{offset + 1}-{offset + len(letters)}" if letters else "none"
    print(f"{topo.dlq}: {page.matched} dead letter(s), showing {shown}")
    for letter in letters:
        print(_letter_line(letter))
        if show:
            for key, value in sorted(letter.headers.items()):
                if key != "x-traceback":
                    print(f"    {key}: {value}")
            print(f"    body: {letter.message.body!s:.2000}")
            print(f"    result row: {letter.result or 'none'}")
            print("    " + str(letter.headers.get("x-traceback", "")).replace("\n", "\n    "))
    if offset + len(letters) < page.matched:
        print(f"next page: --offset {offset + len(letters)} --limit {limit}")
    return 0


@dlq_group.command("list")
@click.argument("service_name", metavar="SERVICE")
@ID
@_paged
@AS_JSON
def cmd_dlq_list(
    service_name: str, ids: tuple[str, ...], limit: int, offset: int, as_json: bool
) -> int:
    """One line per dead letter: task, reason, attempts, result row, correlation and
    causation ids. Pages: at most --limit, from --offset; a listing that finishes leaves
    the DLQ in its order."""
    return _read(service_name, ids, False, as_json, offset, limit)


@dlq_group.command("show")
@click.argument("service_name", metavar="SERVICE")
@ID
@_paged
@AS_JSON
def cmd_dlq_show(
    service_name: str, ids: tuple[str, ...], limit: int, offset: int, as_json: bool
) -> int:
    """Everything about each dead letter: headers, body, result row, traceback."""
    return _read(service_name, ids, True, as_json, offset, limit)


@dlq_group.command("replay")
@click.argument("service_name", metavar="SERVICE")
@ID
@click.option("--limit", type=int, help="replay at most N")
@click.option("--dry-run", is_flag=True, help="say what would happen, change nothing")
@click.option(
    "--include-refused",
    is_flag=True,
    help="replay not-allowed letters too (judged as their first publisher again)",
)
@click.option("--crash-after", type=click.Choice(replay.REPLAY_STEPS), hidden=True)
def cmd_dlq_replay(
    service_name: str,
    ids: tuple[str, ...],
    limit: int | None,
    dry_run: bool,
    include_refused: bool,
    crash_after: str | None,
) -> int:
    """Send dead letters back to the queue they died in (audited, once each)."""
    topo = service(service_name)
    done = replay.replay(
        get_settings().amqp_url,
        engine(),
        topo,
        ids=set(ids),
        limit=limit,
        dry_run=dry_run,
        crash_after=crash_after,
        include_refused=include_refused,
    )
    for item in done:
        letter, copies = item.letter, len(item.copies)
        print(
            f"{item.outcome}: {letter.task_id} {letter.task} -> {letter.origin}"
            + (f" ({copies} copies)" if copies > 1 else "")
        )
    replayed = sum(d.outcome in ("replayed", "would replay") for d in done)
    verb = "would replay" if dry_run else "replayed"
    asked = f"asked by {getpass.getuser()}, audited in ops.dlq_audit"
    print(f"{verb} {replayed} of {len(done)} dead letter(s) from {topo.dlq} ({asked})")
    return 0


@dlq_group.command("purge")
@click.argument("service_name", metavar="SERVICE")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def cmd_dlq_purge(service_name: str, yes: bool) -> int:
    """Delete every message in the service's DLQ (audited)."""
    topo, settings = service(service_name), get_settings()
    count = dlq.depth(settings.amqp_url, topo)
    if not yes:
        answer = input(f"delete {count} message(s) from {topo.dlq} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return 1
    print(f"purged {dlq.purge(settings.amqp_url, engine(), topo)} message(s) from {topo.dlq}")
    return 0


COMMANDS = (dlq_group,)
