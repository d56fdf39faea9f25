"""What every layer stands on: settings, the system's services, the topology as data, the
database, tracing and logs, retry policies. Imports nothing else of the platform."""
