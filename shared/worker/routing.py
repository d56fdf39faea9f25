"""Where each task a service sends goes: routing as data, from the topology and contracts."""

from collections.abc import Callable
from typing import Any

from shared.contracts.models import Command, event_types
from shared.core.topology import EVENTS_EXCHANGE, ServiceTopology


def router_for(topo: ServiceTopology, own_queues: dict[str, str]) -> Callable[..., Any]:
    """Routing as data: own tasks to own queues, events to ``events``, commands to their owner.

    Ownership comes from the contracts, never from a name's prefix alone: an event type is
    an event whatever service shares its first word (a service ``user`` does not capture
    ``user.signed_up``), and a command goes to the owner its contract names.
    """

    def route(
        name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> dict[str, Any] | None:
        if name in own_queues:
            return {"queue": own_queues[name]}
        if name in event_types():
            return {"exchange": EVENTS_EXCHANGE, "exchange_type": "topic", "routing_key": name}
        if name in Command.registry:
            owner = Command.registry[name].owner()
            if owner == topo.name:
                return {"queue": topo.tasks_queue}
            return {"exchange": owner, "exchange_type": "topic", "routing_key": f"{owner}.tasks"}
        if name.startswith(f"{topo.name}."):
            return {"queue": topo.tasks_queue}
        return None

    return route
