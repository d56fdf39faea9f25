"""A peer: the same no-op task on Dramatiq (its RabbitMQ broker, default middleware):
persistent messages, acked after the actor returns."""

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

dramatiq.set_broker(RabbitmqBroker(url=os.environ["AMQP_URL"].split(";")[0]))


@dramatiq.actor(queue_name="peer.dramatiq")
def noop(n: int) -> int:
    return n
