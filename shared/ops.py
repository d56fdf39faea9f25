"""The operations CLI: ``python -m shared.ops COMMAND``.

migrate [SERVICE...]    create each service's schema and apply its migrations
topology apply          declare every exchange, queue, binding and DLQ on the broker
"""

import argparse
import sys

from kombu import Connection

from shared.db import ensure_database, migrate
from shared.settings import get_settings
from shared.topology import SERVICES, declare_all, service


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    ensure_database(settings.database_url)
    for name in args.services or list(SERVICES):
        service(name)
        migrate(settings.database_url, name)
        print(f"migrated {name}")
    return 0


def cmd_topology_apply(args: argparse.Namespace) -> int:
    settings = get_settings()
    with Connection(settings.amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=3)
        declare_all(conn)
    for topo in SERVICES.values():
        queues = ", ".join(q.name for q in topo.work_queues())
        print(f"{topo.name}: exchange {topo.name}, queues {queues}, DLQ {topo.dlq}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m shared.ops", description=__doc__.split("\n")[0])
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("services", nargs="*", help="services to migrate (default: all)")
    p.set_defaults(func=cmd_migrate)
    topology = sub.add_parser("topology", help="the broker topology").add_subparsers(
        dest="action", required=True
    )
    topology.add_parser("apply", help="declare everything").set_defaults(func=cmd_topology_apply)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
