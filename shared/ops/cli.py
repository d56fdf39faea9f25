"""The operations CLI: ``python -m shared.ops COMMAND``.

migrate [SERVICE...]             each service's schema and migrations, then the ops schema
topology apply                   declare everything; each service's user and role
topology plan                    what differs between the declared and the live broker
topology export [-o FILE]        the declared topology as RabbitMQ definitions (JSON)
queues                           depth of every work queue and DLQ
workers                          the command that deploys each service's worker
dlq list|show SERVICE            dead letters with their reasons and task rows
dlq replay SERVICE               send dead letters back to their queue (audited)
dlq purge SERVICE                delete a DLQ's messages (audited)
outbox status                    unpublished rows per service outbox
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import amqp.exceptions
import sqlalchemy.exc
from kombu import Connection
from kombu.exceptions import OperationalError
from sqlalchemy import create_engine

from shared.db import ensure_database, migrate
from shared.management import Management, ManagementError
from shared.ops import definitions, dlq, replay
from shared.ops.apply import apply_roles, apply_users, declare_topology, vhost_of
from shared.ops.deployments import WORKERS
from shared.ops.outbox import outbox_lag
from shared.ops.plan import plan
from shared.permissions import CredentialSettings
from shared.settings import get_settings, redact
from shared.topology import SERVICES, service

OPS_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    ensure_database(settings.database_url)
    for name in args.services or list(SERVICES):
        service(name)
        migrate(settings.database_url, name)
        print(f"migrated {name}")
    migrate(settings.database_url, "ops", OPS_MIGRATIONS)
    print("migrated ops")
    return 0


def cmd_topology_apply(args: argparse.Namespace) -> int:
    settings, creds = get_settings(), CredentialSettings()
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
    if local := creds.uses_local_passwords():
        print(f"warning: local passwords for {', '.join(local)} (set SERVICE_PASSWORDS__<NAME>)")
    return 0


def cmd_topology_plan(args: argparse.Namespace) -> int:
    settings = get_settings()
    vhost = vhost_of(settings.amqp_url)
    drift = plan(Management(settings.rabbitmq_management_url), vhost, CredentialSettings())
    for line in drift:
        print(line)
    print(f"{len(drift)} difference(s) on vhost {vhost!r}" if drift else "no drift")
    return 1 if drift else 0


def cmd_topology_export(args: argparse.Namespace) -> int:
    vhost = args.vhost or vhost_of(get_settings().amqp_url)
    text = json.dumps(definitions.export(vhost, CredentialSettings()), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    settings = get_settings()
    live = {
        q["name"]: q
        for q in Management(settings.rabbitmq_management_url).collection(
            "queues", vhost_of(settings.amqp_url)
        )
    }
    print(f"{'queue':<20} {'ready':>8} {'unacked':>8} {'consumers':>9}")
    for topo in SERVICES.values():
        for name in [q.name for q in topo.work_queues()] + [topo.dlq]:
            q = live.get(name, {})
            print(
                f"{name:<20} {q.get('messages_ready', '-'):>8}"
                f" {q.get('messages_unacknowledged', '-'):>8} {q.get('consumers', '-'):>9}"
            )
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    for deployment in WORKERS.values():
        print(f"# {deployment.service}: {deployment.pool} ({deployment.why})")
        print(f"METRICS_PORT={deployment.metrics_port} {deployment.command()}")
    return 0


def _letter_line(letter: dlq.DeadLetter) -> str:
    h = letter.headers
    return (
        f"{letter.task_id:<36}  {h.get('task', '?')}  {h.get('x-dead-letter-reason', 'x-death')}"
        f"  attempts={h.get('x-attempts', '?')}  at={h.get('x-dead-lettered-at', '?')}"
        f"  result={letter.status or '-'}  {h.get('x-exception-type', '')}:"
        f" {str(h.get('x-exception-message', ''))[:80]}"
    )


def cmd_dlq_read(args: argparse.Namespace) -> int:
    topo, settings = service(args.service), get_settings()
    with dlq.opened(settings.amqp_url, topo) as (_channel, letters):
        dlq.join_results(_engine(), topo, letters)
        letters = [d for d in letters if not args.id or d.task_id in args.id]
        print(f"{topo.dlq}: {len(letters)} dead letter(s)")
        for letter in letters:
            print(_letter_line(letter))
            if args.action == "show":
                for key, value in sorted(letter.headers.items()):
                    if key != "x-traceback":
                        print(f"    {key}: {value}")
                print(f"    body: {letter.message.body!s:.2000}")
                print(f"    result row: {letter.result or 'none'}")
                print("    " + str(letter.headers.get("x-traceback", "")).replace("\n", "\n    "))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    topo = service(args.service)
    done = replay.replay(
        get_settings().amqp_url,
        _engine(),
        topo,
        ids=set(args.id or ()),
        limit=args.limit,
        dry_run=args.dry_run,
        crash_after=args.crash_after,
    )
    for item in done:
        letter, copies = item.letter, len(item.copies)
        print(
            f"{item.outcome}: {letter.task_id} {letter.headers.get('task')} -> {letter.origin}"
            + (f" ({copies} copies)" if copies > 1 else "")
        )
    replayed = sum(d.outcome in ("replayed", "would replay") for d in done)
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {replayed} of {len(done)} dead letter(s) from {topo.dlq}")
    return 0


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    topo, settings = service(args.service), get_settings()
    count = dlq.depth(settings.amqp_url, topo)
    if not args.yes:
        answer = input(f"delete {count} message(s) from {topo.dlq} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return 1
    print(f"purged {dlq.purge(settings.amqp_url, _engine(), topo)} message(s) from {topo.dlq}")
    return 0


def cmd_outbox_status(args: argparse.Namespace) -> int:
    lags = outbox_lag(_engine())
    if not lags:
        print("no service has an outbox table")
    for lag in lags:
        age = f"{lag.oldest_age_seconds:.1f}s" if lag.oldest_age_seconds is not None else "-"
        print(f"{lag.service}.outbox: {lag.unpublished} unpublished, oldest {age}")
    return 0


def _engine():
    return create_engine(get_settings().database_url)


def _sub(parent, name: str, func: Callable[[argparse.Namespace], int], help: str):
    p = parent.add_parser(name, help=help)
    p.set_defaults(func=func)
    return p


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m shared.ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(dest="command", required=True)
    p = _sub(sub, "migrate", cmd_migrate, "apply database migrations")
    p.add_argument("services", nargs="*", help="services to migrate (default: all)")
    topology = sub.add_parser("topology", help="the broker topology")
    topo_sub = topology.add_subparsers(dest="action", required=True)
    _sub(topo_sub, "apply", cmd_topology_apply, "declare everything, users and roles")
    _sub(topo_sub, "plan", cmd_topology_plan, "diff declared vs live (exit 1 on drift)")
    p = _sub(topo_sub, "export", cmd_topology_export, "definitions JSON for the management UI")
    p.add_argument("--vhost", help="vhost to write into the file (default: AMQP_URL's)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    _sub(sub, "queues", cmd_queues, "queue and DLQ depths")
    _sub(sub, "workers", cmd_workers, "each service's worker command")
    dead = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="action", required=True)
    for action, help in (("list", "one line per dead letter"), ("show", "everything about each")):
        p = _sub(dead, action, cmd_dlq_read, help)
        p.add_argument("service")
        p.add_argument("--id", action="append", help="only this task id (repeatable)")
    p = _sub(dead, "replay", cmd_dlq_replay, "send dead letters back to their queue")
    p.add_argument("service")
    p.add_argument("--id", action="append", help="only this task id (repeatable)")
    p.add_argument("--limit", type=int, help="replay at most N")
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    p.add_argument("--crash-after", choices=replay.REPLAY_STEPS, help=argparse.SUPPRESS)
    p = _sub(dead, "purge", cmd_dlq_purge, "delete every message in the DLQ")
    p.add_argument("service")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    outbox = sub.add_parser("outbox", help="transactional outboxes")
    _sub(outbox.add_subparsers(dest="action", required=True), "status", cmd_outbox_status, "lag")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
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
