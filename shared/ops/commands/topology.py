"""``eventful topology apply|plan|recreate|export`` and ``eventful queues``: the broker."""

import json
from pathlib import Path

import click
from kombu import Connection

from shared.core.settings import get_settings, redact
from shared.core.topology import SERVICES
from shared.ops import definitions
from shared.ops.apply import apply_roles, apply_users, declare_topology, vhost_of
from shared.ops.commands.common import AS_JSON, fail, print_json
from shared.ops.management import Management
from shared.ops.plan import plan
from shared.ops.recreate import QueueBusy, recreate


@click.group("topology")
def topology_group() -> None:
    """The broker topology: apply, plan, recreate, export."""


@topology_group.command("apply")
def cmd_topology_apply() -> int:
    """Declare everything; each service's user and database role."""
    settings = get_settings()
    creds = settings.permissions
    local = creds.uses_local_passwords()
    if local and not settings.local_mode:
        return fail(
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
    drift = plan(Management(settings.rabbitmq_management_url), vhost, settings.permissions)
    if as_json:
        print_json({"vhost": vhost, "drift": drift})
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
        return fail(str(exc))
    print(f"{queue}: recreated as declared, {kept} message(s) kept")
    return 0


@topology_group.command("export")
@click.option("--vhost", help="vhost to write into the file (default: AMQP_URL's)")
@click.option("-o", "--output", help="file to write (default: stdout)")
def cmd_topology_export(vhost: str | None, output: str | None) -> int:
    """The declared topology as RabbitMQ definitions (JSON) for the management UI."""
    settings = get_settings()
    vhost = vhost or vhost_of(settings.amqp_url)
    text = json.dumps(definitions.export(vhost, settings.permissions), indent=2)
    if output:
        Path(output).write_text(text + "\n")
    else:
        print(text)
    return 0


@click.command("queues")
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
        print_json([{"queue": n, **{f: live.get(n, {}).get(f) for f in fields}} for n in names])
        return 0
    print(f"{'queue':<20} {'ready':>8} {'unacked':>8} {'consumers':>9}")
    for name in names:
        q = live.get(name, {})
        print(
            f"{name:<20} {q.get('messages_ready', '-'):>8}"
            f" {q.get('messages_unacknowledged', '-'):>8} {q.get('consumers', '-'):>9}"
        )
    return 0


COMMANDS = (
    topology_group,
    cmd_queues,
)
