"""The baseline: Celery with its defaults (early ack, no confirms, results ignored)."""

import os

from celery import Celery

app = Celery("plain", broker=os.environ["AMQP_URL"])
# A busy machine's broker can take seconds to answer a handshake: the bench waits for it.
app.conf.update(
    task_ignore_result=True, task_default_queue="plain.tasks", broker_connection_timeout=30
)


@app.task(name="plain.noop")
def noop(n: int) -> int:
    return n
