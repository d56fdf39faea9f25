"""``eventful outbox status|retry|drop|relay``: each service's transactional outbox."""

from dataclasses import asdict

import click

from shared.core.topology import service
from shared.ops import outbox
from shared.ops.commands.common import AS_JSON, engine, print_json


@click.group("outbox")
def outbox_group() -> None:
    """Transactional outboxes: status, relay, retry or drop a parked row."""


@outbox_group.command("status")
@AS_JSON
def cmd_outbox_status(as_json: bool) -> int:
    """Unpublished rows per service outbox, the age of the oldest, and each parked row."""
    lags = outbox.outbox_lag(engine())
    if as_json:
        print_json([asdict(lag) for lag in lags])
        return 0
    if not lags:
        print("no service has an outbox table")
    for lag in lags:
        age = f"{lag.oldest_age_seconds:.1f}s" if lag.oldest_age_seconds is not None else "-"
        print(f"{lag.service}.outbox: {lag.unpublished} unpublished, oldest {age},"
              f" {len(lag.parked)} parked")  # fmt: skip
        for p in lag.parked:
            print(f"  parked {p.id} {p.type} attempts={p.attempts} at={p.parked_at}: {p.reason}")
    return 0


@outbox_group.command("retry")
@click.argument("service_name", metavar="SERVICE")
@click.argument("event_id", metavar="ID", required=False)
@click.option("--all", "every", is_flag=True, help="every parked row of SERVICE")
def cmd_outbox_retry(service_name: str, event_id: str | None, every: bool) -> int:
    """Give a parked row (or --all) back to the relay, with a fresh budget of tries (audited)."""
    if every == bool(event_id):
        raise click.UsageError("give one ID or --all")
    name = service(service_name).name
    if every:
        rows = outbox.retry_all(engine(), name)
    elif (row := outbox.retry(engine(), name, str(event_id))) is not None:
        rows = [row]
    else:
        print(f"{event_id} is not a parked row of {service_name}.outbox")
        return 1
    for row in rows:
        print(f"retry: {row.id} {row.type} back to the relay (was: {row.reason})")
    print(f"{len(rows)} parked row(s) back to the relay")
    return 0


@outbox_group.command("drop")
@click.argument("service_name", metavar="SERVICE")
@click.argument("event_id", metavar="ID")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def cmd_outbox_drop(service_name: str, event_id: str, yes: bool) -> int:
    """Delete a parked row: its event is never published (audited)."""
    prompt = f"delete parked event {event_id} from {service_name}.outbox for good? [y/N] "
    if not yes and input(prompt).strip().lower() not in ("y", "yes"):
        print("nothing dropped")
        return 1
    row = outbox.drop(engine(), service(service_name).name, event_id)
    if row is None:
        print(f"{event_id} is not a parked row of {service_name}.outbox")
        return 1
    print(f"drop: {row.id} {row.type} deleted (was: {row.reason})")
    return 0


@outbox_group.command("relay")
@click.argument("service_name", metavar="SERVICE")
@click.option("--interval", type=float, default=0.5, show_default=True, help="poll, seconds")
@click.option("--batch", type=int, default=100, show_default=True, help="rows per transaction")
def cmd_outbox_relay(service_name: str, interval: float, batch: int) -> int:
    """Publish the service's unsent events until stopped (SIGTERM/SIGINT): the sweeper."""
    from shared.service.relaying import relay_until_stopped

    return relay_until_stopped(service_name, interval, batch)


COMMANDS = (outbox_group,)
