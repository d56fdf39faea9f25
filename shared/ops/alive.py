"""``eventful worker-alive SERVICE``: does this host's worker of SERVICE answer, within N s?

For a container HEALTHCHECK or a systemd watchdog: Celery's ``ping`` control command, sent
through the service's own control exchange (``<service>.pidbox``; the service's broker user
may use it) to one node, ``SERVICE@%h`` as ``eventful worker`` names it (``-n`` as there). The
worker's main process answers between two messages; one that hangs (stopped, deadlocked,
stuck in a blocking call of its consumer) does not. A busy pool does not stop it answering.
The deadline covers everything (importing the app, connecting, waiting), so the command
ends within it even when the broker does not answer.
"""

import importlib
import signal
import time

from celery.utils.nodenames import host_format

from shared.ops.deployments import WORKERS


class Deadline(BaseException):
    """The time given ran out (a BaseException: no ``except Exception`` on the way swallows it)."""


def node_name(service: str, hostname: str | None = None) -> str:
    """The node ``eventful worker SERVICE [-n HOSTNAME]`` starts on this host (default
    ``SERVICE@%h``), with Celery's ``%h`` and friends expanded as the worker does."""
    return host_format(hostname or f"{service}@%h")


def answers(service: str, node: str, timeout: float) -> bool:
    """True if ``node`` answered a ping within ``timeout`` seconds of this call; raises
    kombu's OperationalError when the broker cannot be reached in that time."""
    deadline = time.monotonic() + timeout

    def expired(_signum: int, _frame: object) -> None:
        raise Deadline(f"no answer from {node} within {timeout:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        app = importlib.import_module(WORKERS[service].app).app
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=max(deadline - time.monotonic(), 0.1))
            left = max(deadline - time.monotonic(), 0.1)
            replies = app.control.ping(destination=[node], timeout=left, connection=conn)
        return any(node in reply for reply in replies)
    except Deadline:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
