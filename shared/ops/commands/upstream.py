"""``eventful upstream add|list|remove``: broker users for publishers outside the system."""

from dataclasses import asdict

import click

from shared.core.settings import get_settings
from shared.ops import upstreams
from shared.ops.apply import vhost_of
from shared.ops.commands.common import AS_JSON, print_json
from shared.ops.management import Management


@click.group("upstream")
def upstream_group() -> None:
    """Broker users for services outside this system that publish events to `events`."""


@upstream_group.command("add")
@click.argument("name")
@click.option("--publishes", multiple=True, required=True, help="event type(s) it may publish")
def cmd_upstream_add(name: str, publishes: tuple[str, ...]) -> int:
    """A user that may only publish these event types to `events` (again: new password)."""
    settings = get_settings()
    creds = settings.permissions
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
        settings.permissions,
    )  # fmt: skip
    if as_json:
        print_json([asdict(u) for u in found])
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
    upstreams.remove(management, vhost_of(settings.amqp_url), settings.permissions, name)
    print(f"removed upstream {name}")
    return 0


COMMANDS = (upstream_group,)
