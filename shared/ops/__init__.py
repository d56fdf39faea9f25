"""Operating the system: ``python -m shared.ops`` (migrations, topology, dead letters, outbox)."""
