"""``topology apply``: declare the broker topology, then each service's user and role.

Idempotent: run it after every deploy. Users are global on a broker (their permissions are
per vhost), roles global on a PostgreSQL server; both are (re)set to what the settings say.
"""

from kombu import Connection
from psycopg import sql
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import create_engine, make_url, text

from shared.core.topology import SERVICES, declare_all
from shared.ops.management import Management
from shared.ops.permissions import CredentialSettings, broker_permissions


def vhost_of(amqp_url: str) -> str:
    with Connection(amqp_url.split(";")[0]) as conn:
        return conn.virtual_host


def declare_topology(amqp_url: str) -> None:
    """Every exchange, queue and binding, Celery's delay levels included."""
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=2)
        declare_all(conn)


def apply_users(management: Management, vhost: str, creds: CredentialSettings) -> None:
    """One user per service with exactly its permissions on ``vhost``.

    Topic permissions first and never cleared: an exchange with none allows any routing
    key, so new ones replace old ones in place, stale ones are narrowed to nothing, and the
    vhost permissions that make any of it usable come last (a new user has none before).
    """
    for name, topo in SERVICES.items():
        user = creds.user(name)
        perms = broker_permissions(topo)
        management.put_user(user, creds.password(name))
        for exchange, (write, read) in perms.topics.items():
            management.grant_topic(vhost, user, exchange, write, read)
        for stale in management.topic_permissions(vhost, user):
            if stale["exchange"] not in perms.topics:
                management.grant_topic(vhost, user, stale["exchange"], "^$", "^$")
        management.grant(vhost, user, perms.configure, perms.write, perms.read)


def _owned_objects(conn: SqlConnection, schema: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        text(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind IN ('r','S','v','p')"
        ),
        {"s": schema},
    )
    return [(r.relname, "SEQUENCE" if r.relkind == "S" else "TABLE") for r in rows]


def apply_roles(database_url: str, creds: CredentialSettings) -> None:
    """One login role per service, owning its schema and every table in it.

    Tables that later migrations create (as the migrating admin) are granted to the role by
    default privileges; run ``apply`` again to make the role their owner too.
    """
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    database = make_url(database_url).database
    if database is None:
        raise ValueError("the database URL names no database")
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            if raw is None:
                raise RuntimeError("the database connection was invalidated")
            for name in SERVICES:
                role = sql.Identifier(creds.user(name))
                schema = sql.Identifier(name)
                exists = conn.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": creds.user(name)}
                ).scalar()
                verb = "ALTER" if exists else "CREATE"
                statements = [
                    sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                        role, sql.Literal(creds.password(name))
                    ),
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(database), role
                    ),
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
                    sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, role),
                    sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema),
                    sql.SQL(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON TABLES TO {}"
                    ).format(schema, role),
                    sql.SQL(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON SEQUENCES TO {}"
                    ).format(schema, role),
                ]
                for table, kind in _owned_objects(conn, name):
                    statements.append(
                        sql.SQL("ALTER " + kind + " {}.{} OWNER TO {}").format(
                            schema, sql.Identifier(table), role
                        )
                    )
                for statement in statements:
                    raw.execute(statement)
    finally:
        engine.dispose()
