"""The body of every alembic ``env.py``: versions live in the schema migrated, in the
version table the caller names (the platform's tables and the service's are versioned
apart).

alembic is imported when a migration runs, not with ``shared``: every worker process
imports ``shared``, and alembic (with mako and pygments) is about 9 MiB of each one."""

from sqlalchemy import create_engine, pool


def run() -> None:
    from alembic import context

    config = context.config
    schema = config.attributes["schema"]
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise ValueError("alembic: the configuration gives no sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            version_table=config.attributes.get("version_table", "alembic_version"),
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations(schema=schema)
    engine.dispose()
