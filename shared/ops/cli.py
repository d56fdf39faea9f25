"""The operations CLI: ``eventful COMMAND`` (also ``python -m shared.ops COMMAND``).

Every command has ``--help``; listings take ``--json`` for scripts. Exit codes: 0 done,
1 something to act on (drift, nothing purged), 2 an error, said on stderr.
"""

import getpass
import importlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import amqp.exceptions
import click
import sqlalchemy.exc
from kombu import Connection
from kombu.exceptions import OperationalError
from sqlalchemy import create_engine

from shared.contracts import documents as contract_docs
from shared.core.db import ensure_database, migrate
from shared.core.settings import get_settings, redact
from shared.core.system import declaration
from shared.core.topology import SERVICES, service
from shared.ops import alive, definitions, dlq, outbox, replay, task, upstreams
from shared.ops.apply import apply_roles, apply_users, declare_topology, vhost_of
from shared.ops.deployments import WORKERS
from shared.ops.management import Management, ManagementError
from shared.ops.permissions import CredentialSettings
from shared.ops.plan import plan
from shared.ops.recreate import QueueBusy, recreate
from shared.worker.check import check_app

OPS_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
AS_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


def _json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate an eventful system: migrations, broker topology, workers, dead letters,
    outboxes. Services come from EVENTFUL_SYSTEM (shared/core/system.py)."""


@cli.command("migrate")
@click.argument("services", nargs=-1)
def cmd_migrate(services: tuple[str, ...]) -> int:
    """Each service's schema, the platform's tables and its migrations, then the ops
    schema (SERVICES: default all)."""
    settings = get_settings()
    ensure_database(settings.database_url)
    for name in services or list(SERVICES):
        service(name)
        migrate(settings.database_url, name)
        print(f"migrated {name}")
    migrate(settings.database_url, "ops", OPS_MIGRATIONS)
    print("migrated ops")
    return 0


@cli.group("topology")
def topology_group() -> None:
    """The broker topology: apply, plan, recreate, export."""


@topology_group.command("apply")
def cmd_topology_apply() -> int:
    """Declare everything; each service's user and database role."""
    settings, creds = get_settings(), CredentialSettings()
    local = creds.uses_local_passwords()
    if local and not settings.local_mode:
        return _fail(
            f"local default passwords for {', '.join(local)}: set SERVICE_PASSWORDS__<NAME>"
            " (LOCAL_MODE=1 accepts them, on a developer's machine only)"
        )
    vhost = vhost_of(settings.amqp_url)
    declare_topology(settings.amqp_url)
    for topo in SERVICES.values():
        queues = ", ".join(q.name for q in topo.work_queues())
        print(f"{topo.name}: exchange {topo.name}, queues {queues}, DLQ {topo.dlq}")
    apply_users(Management(settings.rabbitmq_management_url), vhost, creds)
    apply_roles(settings.database_url, creds)
    for name in SERVICES:
        amqp_url = Connection(creds.amqp_url(name, settings.amqp_url).split(";")[0]).as_uri()
        print(f"{name}: user and role {creds.user(name)!r}, AMQP_URL {redact(amqp_url)}")
    if local:
        print(f"local mode: local default passwords for {', '.join(local)}")
    return 0


@topology_group.command("plan")
@AS_JSON
def cmd_topology_plan(as_json: bool) -> int:
    """What differs between the declared and the live broker (exit 1 on drift)."""
    settings = get_settings()
    vhost = vhost_of(settings.amqp_url)
    drift = plan(Management(settings.rabbitmq_management_url), vhost, CredentialSettings())
    if as_json:
        _json({"vhost": vhost, "drift": drift})
        return 1 if drift else 0
    for line in drift:
        print(line)
    print(f"{len(drift)} difference(s) on vhost {vhost!r}" if drift else "no drift")
    return 1 if drift else 0


@topology_group.command("recreate")
@click.argument("queue")
def cmd_topology_recreate(queue: str) -> int:
    """Give a live queue the arguments it is declared with (RabbitMQ cannot change them:
    it is deleted and declared again), keeping its messages in order. Stop the system
    first: it refuses while anything else is connected. `topology plan` shows which
    queues differ."""
    settings = get_settings()
    try:
        kept = recreate(settings.amqp_url, queue, Management(settings.rabbitmq_management_url))
    except QueueBusy as exc:
        return _fail(str(exc))
    print(f"{queue}: recreated as declared, {kept} message(s) kept")
    return 0


@topology_group.command("export")
@click.option("--vhost", help="vhost to write into the file (default: AMQP_URL's)")
@click.option("-o", "--output", help="file to write (default: stdout)")
def cmd_topology_export(vhost: str | None, output: str | None) -> int:
    """The declared topology as RabbitMQ definitions (JSON) for the management UI."""
    vhost = vhost or vhost_of(get_settings().amqp_url)
    text = json.dumps(definitions.export(vhost, CredentialSettings()), indent=2)
    if output:
        Path(output).write_text(text + "\n")
    else:
        print(text)
    return 0


@cli.command("queues")
@AS_JSON
def cmd_queues(as_json: bool) -> int:
    """Depth of every work queue and DLQ."""
    settings = get_settings()
    live = {
        q["name"]: q
        for q in Management(settings.rabbitmq_management_url).collection(
            "queues", vhost_of(settings.amqp_url)
        )
    }
    names = [n for t in SERVICES.values() for n in [q.name for q in t.work_queues()] + [t.dlq]]
    fields = ("messages_ready", "messages_unacknowledged", "consumers")
    if as_json:
        _json([{"queue": n, **{f: live.get(n, {}).get(f) for f in fields}} for n in names])
        return 0
    print(f"{'queue':<20} {'ready':>8} {'unacked':>8} {'consumers':>9}")
    for name in names:
        q = live.get(name, {})
        print(
            f"{name:<20} {q.get('messages_ready', '-'):>8}"
            f" {q.get('messages_unacknowledged', '-'):>8} {q.get('consumers', '-'):>9}"
        )
    return 0


@cli.command("workers")
@AS_JSON
def cmd_workers(as_json: bool) -> int:
    """The command that deploys each service's worker, as the service declares it."""
    if as_json:
        _json([{**asdict(d), "command": d.command()} for d in WORKERS.values()])
        return 0
    for deployment in WORKERS.values():
        print(f"# {deployment.service}: {deployment.pool} ({deployment.why})")
        print(f"METRICS_PORT={deployment.metrics_port} {deployment.command()}")
    return 0


@cli.command("check")
@click.argument("services", nargs=-1)
@AS_JSON
def cmd_check(services: tuple[str, ...], as_json: bool) -> int:
    """Settings that cannot work together (retries, time limits, pool, result lifetime,
    consumer_timeout, beat); exit 1 on a fatal one. Workers run it as they start."""
    found = []
    for name in services or list(SERVICES):
        declared = declaration(name)
        app = importlib.import_module(declared.app).app
        timeout = get_settings().broker_consumer_timeout
        found += check_app(app, declared.deployment.pool, timeout)
    if as_json:
        _json([asdict(f) for f in found])
    else:
        for finding in found:
            print(finding)
        fatal = sum(f.fatal for f in found)
        print(f"{len(found)} finding(s), {fatal} fatal")
    return 1 if any(f.fatal for f in found) else 0


@cli.command("worker")
@click.argument("service_name", metavar="SERVICE")
@click.option("-n", "--hostname", help="node name instead of SERVICE@%h")
def cmd_worker(service_name: str, hostname: str | None) -> int:
    """Run a service's worker as it is deployed: what make, compose and the cluster run."""
    deployment = WORKERS[service_name]
    argv = deployment.argv()
    if hostname:
        argv[argv.index("-n") + 1] = hostname
    os.environ.setdefault("METRICS_PORT", str(deployment.metrics_port))
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "celery", *argv])


@cli.command("worker-alive")
@click.argument("service_name", metavar="SERVICE")
@click.option("-n", "--hostname", help="node name instead of SERVICE@%h (as given to `worker`)")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds, in all")
def cmd_worker_alive(service_name: str, hostname: str | None, timeout: float) -> int:
    """Exit 0 if this host's worker of SERVICE answers a ping within --timeout seconds, 1 if
    not, 2 if the broker cannot be reached (a container HEALTHCHECK, a systemd watchdog)."""
    node = alive.node_name(service_name, hostname)
    try:
        answered = alive.answers(service_name, node, timeout)
    except OperationalError as exc:
        return _fail(f"cannot reach the broker to ping {node}: {exc}")
    print(f"{node}: {'alive' if answered else f'no answer within {timeout:g}s'}")
    return 0 if answered else 1


def _letter_line(letter: dlq.DeadLetter) -> str:
    h = letter.headers
    return (
        f"{letter.task_id:<36}  {letter.task}  {h.get('x-dead-letter-reason', 'x-death')}"
        f"  attempts={h.get('x-attempts', '?')}  at={h.get('x-dead-lettered-at', '?')}"
        f"  result={letter.status or '-'}  correlation={letter.correlation_id or '-'}"
        f"  causation={letter.causation_id or '-'}  {h.get('x-exception-type', '')}:"
        f" {str(h.get('x-exception-message', ''))[:80]}"
    )


def _letter_json(letter: dlq.DeadLetter) -> dict[str, Any]:
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


@cli.group("dlq")
def dlq_group() -> None:
    """Dead letters: list, show, replay, purge."""


ID = click.option("--id", "ids", multiple=True, help="only this task id (repeatable)")
PAGE = [
    click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
                 help="show at most N dead letters"),
    click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
                 help="skip the first N (the next page: --offset OFFSET+LIMIT)"),
]  # fmt: skip


def _paged(command):
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
    dlq.join_results(_engine(), topo, letters)
    if as_json:
        _json([_letter_json(letter) for letter in letters])
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
    crash_after,
) -> int:
    """Send dead letters back to the queue they died in (audited, once each)."""
    topo = service(service_name)
    done = replay.replay(
        get_settings().amqp_url,
        _engine(),
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
    print(f"purged {dlq.purge(settings.amqp_url, _engine(), topo)} message(s) from {topo.dlq}")
    return 0


@cli.group("outbox")
def outbox_group() -> None:
    """Transactional outboxes: status, relay, retry or drop a parked row."""


@outbox_group.command("status")
@AS_JSON
def cmd_outbox_status(as_json: bool) -> int:
    """Unpublished rows per service outbox, the age of the oldest, and each parked row."""
    lags = outbox.outbox_lag(_engine())
    if as_json:
        _json([asdict(lag) for lag in lags])
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
    rows = outbox.retry_all(_engine(), name) if every else [outbox.retry(_engine(), name, event_id)]
    if rows == [None]:
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
    row = outbox.drop(_engine(), service(service_name).name, event_id)
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
    from shared.service.outbox import relay_until_stopped

    return relay_until_stopped(service_name, interval, batch)


@cli.group("upstream")
def upstream_group() -> None:
    """Broker users for services outside this system that publish events to `events`."""


@upstream_group.command("add")
@click.argument("name")
@click.option("--publishes", multiple=True, required=True, help="event type(s) it may publish")
def cmd_upstream_add(name: str, publishes: tuple[str, ...]) -> int:
    """A user that may only publish these event types to `events` (again: new password)."""
    settings, creds = get_settings(), CredentialSettings()
    vhost = vhost_of(settings.amqp_url)
    types = tuple(t.strip() for option in publishes for t in option.split(",") if t.strip())
    management = Management(settings.rabbitmq_management_url)
    try:
        password = upstreams.add(management, vhost, creds, name, types)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    url = upstreams.amqp_url(creds, name, password, settings.amqp_url.split(";")[0])
    print(f"{name}: user {creds.user(name)!r} may publish {', '.join(types)} to 'events'")
    print(f"AMQP_URL={url}")
    print("the password is shown only now; `upstream add` again sets a new one")
    return 0


@upstream_group.command("list")
@AS_JSON
def cmd_upstream_list(as_json: bool) -> int:
    """Upstream users on this vhost and the event types each may publish."""
    settings = get_settings()
    found = upstreams.upstreams(
        Management(settings.rabbitmq_management_url), vhost_of(settings.amqp_url),
        CredentialSettings(),
    )  # fmt: skip
    if as_json:
        _json([asdict(u) for u in found])
        return 0
    for u in found:
        print(f"{u.name}  user {u.user!r}  publishes {', '.join(u.publishes) or '(nothing)'}")
    return 0


@upstream_group.command("remove")
@click.argument("name")
def cmd_upstream_remove(name: str) -> int:
    """Delete an upstream's user."""
    settings = get_settings()
    management = Management(settings.rabbitmq_management_url)
    upstreams.remove(management, vhost_of(settings.amqp_url), CredentialSettings(), name)
    print(f"removed upstream {name}")
    return 0


@cli.group("contracts")
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


cli.add_command(task.command)


def _engine():
    return create_engine(get_settings().database_url)


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
    except KeyError as exc:
        return _fail(exc.args[0])
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
        return _fail(f"the broker refused access (check the user's permissions): {exc}")
    except amqp.exceptions.PreconditionFailed as exc:
        return _fail(
            f"the broker has it declared differently (see `topology plan`; a queue argument"
            f" changes only by deleting and recreating the queue): {exc}"
        )
    except amqp.exceptions.NotFound as exc:
        return _fail(f"not on the broker (run `topology apply`): {exc}")
    except (OperationalError, ConnectionError) as exc:
        url = Connection(get_settings().amqp_url.split(";")[0]).as_uri()
        return _fail(f"cannot reach the broker at {url}: {exc}")
    except ManagementError as exc:
        return _fail(str(exc))
    except sqlalchemy.exc.OperationalError as exc:
        return _fail(f"cannot reach PostgreSQL: {exc.orig}")
    except sqlalchemy.exc.ProgrammingError as exc:
        return _fail(f"PostgreSQL refused (run `migrate`?): {exc.orig}")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
