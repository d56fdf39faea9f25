"""Publisher confirms awaited in batches, for callers that do not need each one.

Every publish of a service's app waits for the broker's confirm before it returns: one
round trip per message (about a millisecond on a quorum queue). A caller that publishes
many messages and only needs to know that all of them were confirmed says so::

    with confirmed_batch(app):
        for n in range(1000):
            task.delay(n)
    # here every one of the 1,000 was confirmed by the broker

Inside the block the app's publishes on this thread go out on one channel without
waiting (pipelined); the block's end waits for all their confirms and raises
``UnconfirmedPublish`` when the broker nacked any of them, the connection or channel was
lost before all were confirmed, or ``timeout`` passed. Then none of the block's messages
may be taken as published (some may have been: publish them again, consumers are
idempotent). An exception raised inside the block propagates without waiting: nothing in
the block counts as confirmed then either. Other threads are unaffected; a nested block
joins the outer one. A batch holds one pooled broker connection until its end.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Producer

#: Outstanding confirms past which a batch stops to read confirms before publishing more:
#: bounds what the broker and this process hold for a very long batch.
WINDOW = 2000


class UnconfirmedPublish(Exception):
    """A batch's messages were not all confirmed by the broker."""


class Tags:
    """The delivery tags of one confirm-mode channel's publishes the broker has not
    confirmed yet, and how many it nacked. Exact per tag, not a watermark: RabbitMQ may
    ack a higher tag while a lower one is pending (publishes routed to different queues),
    and a ``multiple`` ack or nack settles only the tags up to it still outstanding. Kept
    apart from the channel so the bookkeeping can be driven frame by frame."""

    def __init__(self) -> None:
        self.published = 0
        self.nacked = 0
        self.unconfirmed: set[int] = set()
        self.lowest = 1  # no tag below this one is unconfirmed: ``multiple`` scans from it

    def publish(self) -> int:
        """The next publish's delivery tag (the channel numbers them from 1)."""
        self.published += 1
        self.unconfirmed.add(self.published)
        return self.published

    def ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def nack(self, tag: int, multiple: bool) -> None:
        self.nacked += self._settle(tag, multiple)

    def _settle(self, tag: int, multiple: bool) -> int:
        """Forget the tags this confirm covers; how many of them were still unconfirmed."""
        covered = range(self.lowest, tag + 1) if multiple else (tag,)
        settled = self.unconfirmed.intersection(covered)
        self.unconfirmed -= settled
        if multiple:
            self.lowest = max(self.lowest, tag + 1)
        return len(settled)

    @property
    def outstanding(self) -> int:
        """Publishes neither acked nor nacked yet."""
        return len(self.unconfirmed)


class ConfirmBatch:
    """One channel in confirm mode whose publishes are counted, and their confirms."""

    def __init__(self, connection: Any, timeout: float) -> None:
        self.connection = connection  # kombu.Connection
        self.timeout = timeout
        self.channel = connection.channel()
        self.channel.confirm_select()
        self.channel._confirm_selected = True
        # Publish without waiting: confirms are counted by ``tags`` as they are read.
        self.tags = Tags()
        self.channel.basic_publish = self._publish
        self.channel.events["basic_ack"].add(self.tags.ack)
        self.channel.events["basic_nack"].add(self.tags.nack)
        self.producer = Producer(self.channel, auto_declare=False)

    @property
    def published(self) -> int:
        return self.tags.published

    def _publish(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("confirm_timeout", None)
        result = self.channel._basic_publish(*args, **kwargs)
        self.tags.publish()
        if self.tags.outstanding >= WINDOW:
            self._drain(until=WINDOW // 2)
        return result

    def _drain(self, until: int) -> None:
        """Read confirms until at most ``until`` publishes are still unconfirmed."""
        deadline = time.monotonic() + self.timeout
        while self.tags.outstanding > until:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UnconfirmedPublish(
                    f"{self.tags.outstanding} of {self.published} publishes not confirmed "
                    f"within {self.timeout} s"
                )
            self.connection.drain_events(timeout=remaining)

    def finish(self) -> None:
        """Wait for every confirm; raise ``UnconfirmedPublish`` unless all were acks."""
        if self.producer.channel is not self.channel:
            raise UnconfirmedPublish(
                "the connection was lost during the batch: its messages published before "
                "the loss may not have reached the broker"
            )
        try:
            self._drain(until=0)
        except UnconfirmedPublish:
            raise
        except Exception as exc:  # the connection or channel went away
            raise UnconfirmedPublish(
                f"{self.tags.outstanding} of {self.published} publishes not confirmed: {exc!r}"
            ) from exc
        if self.tags.nacked:
            raise UnconfirmedPublish(f"the broker nacked {self.tags.nacked} of {self.published}")

    def close(self, failed: bool) -> None:
        """Close the batch's channel; after a failure, drop the whole connection instead
        (a closing handshake could wait forever on a connection that hangs)."""
        if failed:
            self.connection.collect()
            return
        try:
            self.channel.close()
        except Exception:  # already closed with its connection: nothing to give back
            self.connection.collect()


_local = threading.local()


def current(app: Any) -> ConfirmBatch | None:
    """The batch open on this thread for ``app``, if any."""
    return getattr(_local, "batches", {}).get(id(app))


@contextmanager
def confirmed_batch(app: Any, timeout: float = 30.0) -> Iterator[ConfirmBatch]:
    """Publishes of ``app`` on this thread inside the block are confirmed together at its
    end (see the module's docstring); ``timeout`` bounds the wait for the confirms."""
    batches = _local.__dict__.setdefault("batches", {})
    if id(app) in batches:
        yield batches[id(app)]
        return
    policy = app.conf.task_publish_retry_policy or {}
    with app.connection_for_write() as conn:
        conn.ensure_connection(
            max_retries=policy.get("max_retries", 3),
            interval_start=policy.get("interval_start", 0),
            interval_step=policy.get("interval_step", 0.2),
            interval_max=policy.get("interval_max", 1),
        )
        batch = ConfirmBatch(conn, timeout)
        batches[id(app)] = batch
        failed = True
        try:
            yield batch
            del batches[id(app)]
            batch.finish()
            failed = False
        finally:
            batches.pop(id(app), None)
            batch.close(failed)
