"""``eventful migrate``: each service's schema and the ops schema."""

import click

from shared.core.db import ensure_database, migrate
from shared.core.settings import get_settings
from shared.core.topology import SERVICES, service
from shared.ops.commands.common import OPS_MIGRATIONS


@click.command("migrate")
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


COMMANDS = (cmd_migrate,)
