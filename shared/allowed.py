"""Which messages a service's queue may run, judged only by what the broker vouches for.

Topic permissions check routing keys, not the ``task`` header: a service ``a`` may publish
to ``b.tasks`` (to send ``b`` a command) with ``task=b.internal_step``. So a worker runs:

- any task, when the message's ``user_id`` is the service's own broker user or the
  operator's (``OPERATOR_USER``: DLQ replays). RabbitMQ refuses a publish whose
  ``user_id`` is not the connection's user, and the platform stamps it on every publish
  of a service (``stamped``), retries and ``celery.*`` tasks included; native delayed
  delivery keeps it.
- an event from the ``events`` exchange, when it subscribes to it and the task is the
  routing key (which topic permissions limit to the sender's own event types).
- a command it serves (``Command.owner``), from anyone.

Everything else is dead-lettered ``not-allowed``. Isolation needs a broker user per
service: services sharing one user are one principal here.
"""

from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.contracts import Command
from shared.topology import EVENTS_EXCHANGE
from shared.wire import MalformedMessage


class NotAllowed(MalformedMessage):
    """A task this queue may not run from this sender."""

    def __init__(self, detail: str) -> None:
        super().__init__("not-allowed", detail)


@lru_cache(maxsize=64)
def broker_user(amqp_url: str) -> str:
    """The user a connection to ``amqp_url`` (the first of a failover list) logs in as
    (cached: every publish asks)."""
    username = urlsplit(amqp_url.split(";")[0].strip()).username
    return unquote(username) if username else "guest"


def stamped(route: dict[str, Any] | None, user: str) -> dict[str, Any]:
    """A router's answer with the publisher's ``user_id``, which the broker validates."""
    return {**(route or {}), "user_id": user}


def check_allowed(app: Any, message: Any) -> None:
    """Raise ``NotAllowed`` unless ``app``'s service may run ``message`` from its sender."""
    topo = app.conf.service_topology
    task = message.headers["task"]
    if task not in app.tasks:
        return  # nothing to run: dead-lettered as unknown-task
    sender = (message.properties or {}).get("user_id")
    if sender is not None and sender in (broker_user(app.conf.broker_url), app.conf.operator_user):
        return
    delivery = message.delivery_info or {}
    if delivery.get("exchange") == EVENTS_EXCHANGE:
        if task == delivery.get("routing_key") and task in topo.subscribes:
            return
        raise NotAllowed(f"{task!r} from events on {delivery.get('routing_key')!r} (user {sender})")
    command = Command.registry.get(task)
    if command is not None and command.owner() == topo.name:
        return
    raise NotAllowed(f"{task!r} is internal to {topo.name}; sent by user {sender!r}")
