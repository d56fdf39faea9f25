from shared import run_migrations

run_migrations()
