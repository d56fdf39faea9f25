"""How each service's worker is deployed: queues, pool, concurrency, as one command each.

Every worker runs prefork: it is the one pool that enforces ``soft_time_limit`` and
``time_limit`` (Celery's threads pool accepts and ignores them), and each child keeps
its own database connections for the many result writes. The notifier waits on other
servers more than it computes, so it runs more processes than cores. gevent is not
offered: psycopg 3 blocks the event loop without green-thread support, and every task
writes its result to PostgreSQL.

Every worker runs ``--without-gossip``: gossip declares an event queue named
``celeryev.<uuid>``, a name no per-service user is allowed (it would let one service read
another's worker events). ``-I shared.metrics`` serves Prometheus metrics on METRICS_PORT.
"""

from dataclasses import dataclass

from shared.topology import service


@dataclass(frozen=True)
class WorkerDeployment:
    service: str
    pool: str
    concurrency: str  # "--concurrency N" or "--autoscale MAX,MIN" (prefork only)
    metrics_port: int
    why: str

    def queues(self) -> str:
        return ",".join(q.name for q in service(self.service).work_queues())

    def argv(self) -> list[str]:
        """``celery ... worker`` arguments, after ``celery``."""
        flag, value = self.concurrency.split(" ")
        return [
            "-A", f"services.{self.service}.app", "worker",
            "-Q", self.queues(), "-n", f"{self.service}@%h",
            "--pool", self.pool, flag, value,
            "--without-gossip", "-I", "shared.metrics", "-l", "INFO",
        ]  # fmt: skip

    def command(self) -> str:
        return " ".join(["celery", *self.argv()])


WORKERS: dict[str, WorkerDeployment] = {
    d.service: d
    for d in (
        WorkerDeployment(
            "signup",
            "prefork",
            "--autoscale 4,1",
            9101,
            "light database work behind the API; scales down to one process when idle",
        ),
        WorkerDeployment(
            "notifier",
            "prefork",
            "--autoscale 8,2",
            9102,
            "waits on SMTP servers and the SMS gateway; only prefork enforces the send time"
            " limits (the threads pool ignores them), so a hung send is cut and retried",
        ),
        WorkerDeployment(
            "reports",
            "prefork",
            "--autoscale 4,2",
            9103,
            "aggregation and report rendering: CPU-bound, one process per core",
        ),
    )  # fmt: skip
}
