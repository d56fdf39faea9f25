"""A peer: the same no-op task on FastStream (aio-pika): a durable classic queue, no
per-message logging, acked after the handler returns (its default ack policy). Messages
are published persistent (``persist=True``, ``publish``)."""

import os

from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

QUEUE = RabbitQueue("peer.faststream", durable=True)
#: As plain Celery's worker: prefetch multiplier 4 x 2 processes per worker process.
broker = RabbitBroker(os.environ["AMQP_URL"].split(";")[0], logger=None)
app = FastStream(broker, logger=None)


@broker.subscriber(QUEUE, channel=Channel(prefetch_count=8))
async def noop(n: int) -> int:
    return n


async def publish(count: int) -> None:
    """``count`` persistent messages to the queue (declared first)."""
    async with RabbitBroker(os.environ["AMQP_URL"].split(";")[0], logger=None) as producer:
        await producer.declare_queue(QUEUE)
        for i in range(count):
            await producer.publish(i, QUEUE, persist=True)
