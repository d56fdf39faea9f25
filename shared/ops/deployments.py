"""How each service's worker is deployed: queues, pool, concurrency, as one command each
(declared by the service, ``shared.core.system.Deployment``).

Every worker runs prefork: it is the one pool that enforces ``soft_time_limit`` and
``time_limit`` (Celery's threads pool accepts and ignores them), and each child keeps
its own database connections for the many result writes. A service that waits on other
servers more than it computes runs more processes than cores. gevent is not
offered: psycopg 3 blocks the event loop without green-thread support, and every task
writes its result to PostgreSQL.

Every worker runs ``--without-gossip``: gossip declares an event queue named
``celeryev.<uuid>``, a name no per-service user is allowed (it would let one service read
another's worker events). ``-I shared.ops.metrics`` serves Prometheus metrics on METRICS_PORT.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from shared.core.system import Discovered, ServiceDeclaration
from shared.core.topology import service


@dataclass(frozen=True)
class WorkerDeployment:
    service: str
    app: str
    pool: str
    concurrency: str  # "--concurrency N" or "--autoscale MAX,MIN" (prefork only)
    metrics_port: int
    why: str

    @classmethod
    def of(cls, declared: ServiceDeclaration) -> "WorkerDeployment":
        d = declared.deployment
        return cls(declared.name, declared.app, d.pool, d.concurrency, d.metrics_port, d.why)

    def queues(self) -> str:
        return ",".join(q.name for q in service(self.service).work_queues())

    def argv(self) -> list[str]:
        """``celery ... worker`` arguments, after ``celery``."""
        flag, value = self.concurrency.split(" ")
        return [
            "-A", self.app, "worker",
            "-Q", self.queues(), "-n", f"{self.service}@%h",
            "--pool", self.pool, flag, value,
            "--without-gossip", "-I", "shared.ops.metrics", "-l", "INFO",
        ]  # fmt: skip

    def command(self) -> str:
        return " ".join(["celery", *self.argv()])


#: Each service's worker as its package declares it (``ServiceDeclaration.deployment``).
WORKERS: Mapping[str, WorkerDeployment] = Discovered(WorkerDeployment.of)
