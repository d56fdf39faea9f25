"""What runs an outbox's relay (``shared.service.outbox``), in two places:

- ``AfterCommit``: a thread in the web process that publishes right after commit, so the
  request never waits on the broker; when the broker is away it gives up at once.
- ``eventful outbox relay SERVICE``: the sweeper, its own process, that publishes
  whatever is left unsent (broker outages, crashed web processes), every few tenths of a
  second, and stops cleanly on SIGTERM/SIGINT.
"""

import logging
import queue
import signal
import threading
import time
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from shared.service.declaration import Service
from shared.service.outbox import Outbox, Relay, RelayError

logger = logging.getLogger(__name__)


#: Seconds the after-commit thread waits for more events before a pass: a pass costs about
#: 1.3 ms of CPU besides its publishes (its transaction: SELECT, UPDATE, COMMIT), shared
#: by the events of ``linger`` seconds (at 100 signups/s about five), for at most that
#: much more delay before an event leaves.
LINGER = 0.05


class AfterCommit:
    """Publishes just-committed events from a background thread of the web process.

    ``notify`` only queues the event id, so a request never waits on the broker. The
    thread waits ``linger`` seconds after an event for the ones committed just after it,
    then publishes what has queued up in one pass (one transaction, its SELECT and UPDATE
    shared by the batch); when the broker is away the relay fails fast and the rows stay
    for the sweeper.
    """

    def __init__(self, relay: Relay, linger: float = LINGER) -> None:
        self.relay, self.linger = relay, linger
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
            if ids[0] is not None:
                time.sleep(self.linger)
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


def relay_until_stopped(service_name: str, interval: float, batch: int) -> int:
    """The sweeper (``eventful outbox relay SERVICE``): relay until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    relay = Relay(Outbox(Service(service_name)), batch_size=batch)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logger.info("relaying the %s outbox every %ss", service_name, interval)
    sweep(relay, interval, stop)
    logger.info("%s outbox relay stopped", service_name)
    return 0
