"""Least privilege per service, as data: its RabbitMQ user and its PostgreSQL role.

A service's user may configure (declare, delete) only what is its own: its exchanges and
queues (``shared.core.topology.declare_service``) and Celery's pidbox/celeryev names, which
``shared.worker.app`` namespaces per service. What the vhost shares (``events``,
``events.unrouted``, Celery's ``celery_delayed_*`` levels and ``celery_delayed_delivery``)
holds other services' messages, so only the operator declares it (``topology apply``);
a service may publish events to ``events`` and countdowns to ``celery_delayed_27``, and
bind its own exchange and queues from ``events`` and ``celery_delayed_delivery``, and
nothing else there: no delete, purge, read or unbind (``shared.worker.delayed``). Topic
permissions then narrow the routing keys: on ``events`` it publishes only its own event
types and binds only the ones it subscribes to; on another service's exchange it may only
send commands (``<owner>.tasks``); through the delay levels, only to its own queues and
other services' commands.
"""

import re
from dataclasses import dataclass

from shared.core.settings import CredentialSettings
from shared.core.topology import (
    DELAY_LEVELS,
    DELAYED_DELIVERY,
    EVENTS_EXCHANGE,
    SERVICES,
    ServiceTopology,
)

__all__ = [
    "DELAY_LEVELS",
    "DELAYED_DELIVERY",
    "DELAY_ENTRY",
    "BrokerPermissions",
    "CredentialSettings",
    "broker_permissions",
]

#: Where Celery publishes every countdown (the delay in the routing key's 28 bits).
DELAY_ENTRY = "celery_delayed_27"


@dataclass(frozen=True)
class BrokerPermissions:
    """``configure``/``write``/``read`` regexes for one vhost, plus topic permissions."""

    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]]  # exchange -> (write, read)


def _any_of(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


def _names(*names: str) -> list[str]:
    return [re.escape(n) for n in names]


def broker_permissions(topo: ServiceTopology) -> BrokerPermissions:
    """What ``topo``'s user may do on the broker, and nothing more."""
    own_queues = _names(topo.tasks_queue, topo.events_queue, topo.dlq)
    pidbox = _names(f"{topo.name}.pidbox", f"reply.{topo.name}.pidbox")
    pidbox_queues = [rf".*\.{re.escape(topo.name)}\.pidbox"]  # node and reply queues
    own_exchanges = _names(topo.name, topo.dlx, f"{topo.name}.celeryev")
    own = own_exchanges + own_queues + pidbox + pidbox_queues
    others = [o for o in SERVICES if o != topo.name]
    delayed_keys = [re.escape(topo.tasks_queue), re.escape(topo.events_queue)]
    delayed_keys += [re.escape(f"{o}.tasks") for o in others]
    delay_write = r"^([01]\.)+(" + "|".join(delayed_keys) + ")$"
    topics = {
        EVENTS_EXCHANGE: (
            _any_of(*_names(*topo.publishes)) if topo.publishes else "^$",
            _any_of(*_names(*topo.subscribes)) if topo.subscribes else "^$",
        ),
        **{o: (_any_of(re.escape(f"{o}.tasks")), "^$") for o in others},
        DELAY_ENTRY: (delay_write, "^$"),
        DELAYED_DELIVERY: ("^$", r"^#\.(" + "|".join(delayed_keys[:2]) + ")$"),
    }
    return BrokerPermissions(
        configure=_any_of(*own),
        write=_any_of(*own, *_names(*others, EVENTS_EXCHANGE, DELAY_ENTRY)),
        read=_any_of(*own, *_names(EVENTS_EXCHANGE, DELAYED_DELIVERY)),
        topics=topics,
    )
