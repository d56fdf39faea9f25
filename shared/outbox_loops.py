"""The two loops that drive an outbox ``Relay`` (``shared.outbox``): ``AfterCommit``, a
thread of the web process that publishes right after commit, and ``sweep``, the sweeper's
loop that publishes whatever is left unsent.
"""

import logging
import queue
import threading
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from shared.outbox import Relay, RelayError

logger = logging.getLogger(__name__)


class AfterCommit:
    """Publishes just-committed events from a background thread of the web process.

    ``notify`` only queues the event id, so a request never waits on the broker. The
    thread publishes what has queued up in one go; when the broker is away the relay
    fails fast and the rows stay for the sweeper.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._ids: queue.SimpleQueue[UUID | None] = queue.SimpleQueue()
        name = f"{relay.outbox.service.name}-outbox-after-commit"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "AfterCommit":
        self._thread.start()
        return self

    def notify(self, event_id: UUID) -> None:
        self._ids.put(event_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued (as far as the broker allows), then end the thread."""
        self._ids.put(None)
        self._thread.join(timeout)
        self.relay.close()

    def _run(self) -> None:
        while True:
            ids = [self._ids.get()]
            while not self._ids.empty():
                ids.append(self._ids.get())
            pending = [i for i in ids if i is not None]
            for start in range(0, len(pending), self.relay.batch_size):
                self._publish(pending[start : start + self.relay.batch_size])
            if None in ids:
                return

    def _publish(self, ids: list[UUID]) -> None:
        try:
            self.relay.publish_pending(ids)
        except RelayError as exc:
            logger.warning("after-commit publish gave up, the sweeper will retry: %s", exc)
        except SQLAlchemyError:
            logger.exception("after-commit publish could not read the outbox")


def sweep(relay: Relay, interval: float, stop: threading.Event) -> None:
    """Publish everything unsent, then look again every ``interval`` seconds until ``stop``."""
    name = relay.outbox.service.name
    failing = False
    while not stop.is_set():
        try:
            while (sent := relay.publish_pending()) and not stop.is_set():
                logger.info("%s outbox: published %d event(s)", name, sent)
            if failing:
                logger.info("%s outbox: broker reachable again", name)
            failing = False
        except (RelayError, SQLAlchemyError) as exc:
            if not failing:
                logger.warning("%s outbox: cannot publish now, retrying: %s", name, exc)
            failing = True
        stop.wait(interval)
    relay.close()
