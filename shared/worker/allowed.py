"""Which messages a service's queue may run, judged only by what the broker vouches for.

Topic permissions check routing keys, not the ``task`` header: a service ``a`` may publish
to ``b.tasks`` (to send ``b`` a command) with ``task=b.internal_step``. So a worker runs:

- any task, with whatever else the message asks for (``shared.worker.trust``), when the
  message's ``user_id`` is the service's own broker user or the operator's
  (``OPERATOR_USER``). RabbitMQ refuses a publish whose ``user_id`` is not the
  connection's user, and the platform stamps it on every publish of a service
  (``stamped``), retries and ``celery.*`` tasks included; native delayed delivery keeps
  it. A DLQ replay, though published by the operator, is judged as the publisher it
  replays, on the route it first came by: the dead letter records both
  (``ORIGINAL_USER``, always the platform's word), and a record without one trusts
  nobody. Otherwise a refused message would run once an operator replays it.
- an event from the ``events`` exchange, when it subscribes to it and the task is the
  routing key (which topic permissions limit to the sender's own event types).
- a command it serves (``Command.owner``), from anyone.

Everything else is dead-lettered ``not-allowed``, as is a message from anyone else that
asks for more than its task (``shared.worker.trust``). Isolation needs a broker user per
service: services sharing one user are one principal here.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.contracts.models import Command
from shared.core.topology import EVENTS_EXCHANGE
from shared.worker.intake import keep_received, received
from shared.worker.trust import kept, refusals
from shared.worker.wire import MalformedMessage

#: Headers a dead letter records of its original (``shared.worker.deadletter.dead_letter``) and a
#: replay carries (``shared.ops.replay``); read only on the operator's replays.
ORIGINAL_USER = "x-original-user-id"
ORIGINAL_EXCHANGE = "x-original-exchange"
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
REPLAYED = "x-replayed-at"


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


@dataclass(frozen=True)
class Publisher:
    """Who published a message (the broker-validated user; None: nobody we know) and where."""

    user: str | None
    exchange: str
    routing_key: str


def publisher(app: Any, message: Any) -> Publisher:
    """The publisher ``message`` is judged as: its ``user_id`` and route; for the
    operator's DLQ replay, the original's, as its dead letter recorded them."""
    user = (message.properties or {}).get("user_id")
    sent = received(message).headers or {}
    if user is not None and user == app.conf.operator_user and REPLAYED in sent:
        user, exchange, key = (_text(sent.get(h)) for h in (ORIGINAL_USER, ORIGINAL_EXCHANGE,
                                                             ORIGINAL_ROUTING_KEY))  # fmt: skip
        return Publisher(user or None, exchange, key)
    delivery = message.delivery_info or {}
    return Publisher(user, delivery.get("exchange") or "", delivery.get("routing_key") or "")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def check_allowed(app: Any, message: Any) -> None:
    """Raise ``NotAllowed`` unless ``app``'s service may run ``message`` from its sender;
    from anyone it does not trust, only the headers anyone may send reach the task."""
    topo = app.conf.service_topology
    task = message.headers["task"]
    if task not in app.tasks:
        return  # nothing to run: dead-lettered as unknown-task
    sender = publisher(app, message)
    if sender.user is not None and sender.user in (
        broker_user(app.conf.broker_url), app.conf.operator_user
    ):  # fmt: skip
        return
    _screen(message, sender)
    if sender.exchange == EVENTS_EXCHANGE:
        if task == sender.routing_key and task in topo.subscribes:
            return
        raise NotAllowed(f"{task!r} from events on {sender.routing_key!r} (user {sender.user})")
    command = Command.registry.get(task)
    if command is not None and command.owner() == topo.name:
        return
    raise NotAllowed(f"{task!r} is internal to {topo.name}; sent by user {sender.user!r}")


def _screen(message: Any, sender: Publisher) -> None:
    """Refuse what a message from ``sender`` asks for; drop the headers it may not send
    (the dead letter still shows them: ``received``)."""
    asked = refusals(message.headers, message.payload[2])
    if asked:
        raise NotAllowed(
            f"{', '.join(asked)} may be sent only by the service itself; sent by user"
            f" {sender.user!r}"[:500]
        )
    headers = {k: v for k, v in message.headers.items() if kept(k)}
    if headers != message.headers:
        keep_received(message)
        message.headers = headers
