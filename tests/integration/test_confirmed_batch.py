"""``confirmed_batch``: publishes confirmed together at the block's end, or an error there.

Each test publishes through a service's real Celery app (``send_task``, the path
``delay()`` takes) to a real RabbitMQ; the broker's nacks come from a queue that refuses
what exceeds its length, the connection loss from a loopback proxy the test cuts.
"""

import uuid

import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError

from infra.tcp_proxy import TcpProxy
from shared.core.settings import Settings
from shared.service.declaration import Service
from shared.worker.confirms import UnconfirmedPublish, confirmed_batch


def app_for(stack, amqp_url: str | None = None):
    settings = Settings(amqp_url=amqp_url or stack.amqp_url, database_url=stack.database_url)
    return Service("reports", settings=settings).celery


def private_queue(stack, **arguments) -> Queue:
    queue = Queue(f"batch-{uuid.uuid4().hex[:8]}", Exchange(""), queue_arguments=arguments)
    with Connection(stack.amqp_url) as conn:
        queue(conn.default_channel).declare()
    return queue


def ready(stack, queue: Queue) -> int:
    with Connection(stack.amqp_url) as conn:
        return conn.default_channel.queue_declare(queue.name, passive=True).message_count


def send(app, queue: Queue, n: int) -> None:
    app.send_task("reports.batch_probe", args=(n,), queue=queue, routing_key=queue.name,
                  ignore_result=True, declare=[])  # fmt: skip


def test_every_publish_of_a_batch_is_in_the_queue_when_the_block_ends(stack):
    app, queue = app_for(stack), private_queue(stack)
    with confirmed_batch(app) as batch:
        for n in range(3000):
            send(app, queue, n)
    assert batch.published == 3000
    assert ready(stack, queue) == 3000


def test_a_nacked_publish_inside_a_batch_raises_at_its_end(stack):
    app = app_for(stack)
    queue = private_queue(stack, **{"x-max-length": 5, "x-overflow": "reject-publish"})
    with pytest.raises(UnconfirmedPublish, match="nacked 15 of 20"), confirmed_batch(app):
        for n in range(20):
            send(app, queue, n)
    assert ready(stack, queue) == 5


def test_a_publish_outside_a_batch_still_waits_for_its_confirm(stack):
    app = app_for(stack)
    queue = private_queue(stack, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    send(app, queue, 0)
    app.conf.task_publish_retry = False  # a nack is then raised at once, not retried
    with pytest.raises(OperationalError) as raised:
        send(app, queue, 1)
    assert isinstance(raised.value.__cause__, MessageNacked)


def test_a_batch_whose_confirms_never_come_raises_at_its_end(stack):
    proxy = TcpProxy.to(stack.amqp_url).start()
    queue = private_queue(stack)
    try:
        app = app_for(stack, proxy.url(stack.amqp_url))
        unconfirmed = pytest.raises(UnconfirmedPublish, match="not confirmed")
        with unconfirmed, confirmed_batch(app, timeout=2):
            send(app, queue, 0)  # the batch's connection and channel are open
            proxy.partition()  # from here on nothing reaches the broker or comes back
            for n in range(1, 50):
                send(app, queue, n)
    finally:
        proxy.restore()
        proxy.stop()


def test_a_connection_lost_inside_a_batch_raises_at_its_end(stack):
    proxy = TcpProxy.to(stack.amqp_url).start()
    queue = private_queue(stack)
    try:
        app = app_for(stack, proxy.url(stack.amqp_url))
        with pytest.raises(UnconfirmedPublish, match="connection was lost"), confirmed_batch(app):
            for n in range(50):
                send(app, queue, n)
            proxy.cut()
            proxy.restore()  # kombu reconnects and publishes on a new channel
            for n in range(50, 60):
                send(app, queue, n)
    finally:
        proxy.restore()
        proxy.stop()


def test_acks_and_nacks_that_arrive_out_of_order_are_each_counted_once(stack):
    """A quorum queue acks after its log is written; a full reject-publish queue nacks at
    once: the broker confirms later tags before earlier ones, one by one or ``multiple``."""
    app = app_for(stack)
    slow = private_queue(stack, **{"x-queue-type": "quorum"})
    full = private_queue(stack, **{"x-max-length": 0, "x-overflow": "reject-publish"})
    with pytest.raises(UnconfirmedPublish, match="nacked 200 of 400"), confirmed_batch(app):
        for n in range(200):
            send(app, slow, n)
            send(app, full, n)
    assert (ready(stack, slow), ready(stack, full)) == (200, 0)
