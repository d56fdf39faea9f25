"""`python -m bench.reports [SIGNUPS] [WORKER ARGS...]`: the reports worker's CPU per event.

Queues each signup's three events (``user.signed_up``, ``notification.sent``,
``notification.failed``) on ``events`` in a private vhost and database, published as
another service would (no ``user_id`` of reports), then starts the reports worker as
deployed (``WORKER ARGS`` appended: ``-E`` for Flower's events, ``-l WARNING``) and times
it from its first message until every fact is stored: CPU of the worker and its pool per
event and per signup.
"""

import json
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu import Connection, Exchange, Producer
from sqlalchemy import create_engine, text

from bench.measure import drain_with
from bench.setup import bench_env
from infra.processes import free_port
from shared.core.settings import get_settings
from shared.ops.deployments import WORKERS


def events(i: int) -> Iterator[dict[str, Any]]:
    """One signup's events, as their publishers send them."""
    now, user = datetime.now(UTC).isoformat(), str(uuid.uuid4())
    yield {"id": str(uuid.uuid4()), "type": "user.signed_up", "version": 1, "source": "signup",
           "occurred_at": now, "payload": {"user_id": user, "email": f"u{i}@example.com",
                                           "name": "U", "phone": None}}  # fmt: skip
    for kind, error in (("notification.sent", None), ("notification.failed", "refused")):
        yield {"id": str(uuid.uuid4()), "type": kind, "version": 1, "source": "notifier",
               "occurred_at": now, "payload": {"delivery_id": f"d{i}-{kind}", "kind": "welcome",
               "channel": "email", "recipient": f"u{i}@example.com", "caused_by": user,
               "error": error}}  # fmt: skip


def main(signups: int, extra: list[str]) -> None:
    with bench_env(get_settings()) as env:
        with Connection(env.amqp_url, transport_options={"confirm_publish": True}) as conn:
            events_exchange = Exchange("events", type="topic", no_declare=True)
            producer = Producer(conn.default_channel, events_exchange, auto_declare=False)
            for i in range(signups):
                for event in events(i):
                    producer.publish(
                        json.dumps([[], {"event": event}, {}]), routing_key=event["type"],
                        content_type="application/json", content_encoding="utf-8",
                        headers={"task": event["type"], "id": event["id"]}, delivery_mode=2,
                    )  # fmt: skip
        engine = create_engine(env.database_url)
        count = 3 * signups

        def stored() -> bool:
            with engine.connect() as c:
                return c.execute(text("SELECT count(*) FROM reports.facts")).scalar() == count

        cmd = [sys.executable, "-m", "celery", *WORKERS["reports"].argv(), *extra]
        log = Path(tempfile.mkdtemp(prefix="bench-reports-")) / "reports-worker.log"
        cpu: list[float] = []
        worker_env = env.env(METRICS_PORT=str(free_port()))
        try:
            seconds, _, _ = drain_with(cmd, "reports.events", worker_env, count, log, stored, cpu)
        finally:
            engine.dispose()
        print(f"reports worker {' '.join(extra)}: {count} events in {seconds:.1f} s,"
              f" {1000 * cpu[0] / count:.3f} ms CPU per event,"
              f" {1000 * cpu[0] / signups:.2f} per signup; log {log}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, sys.argv[2:])
