"""The whole system as one AsyncAPI 3.0 document, derived from the topology and contracts.

Channels are where messages go on the broker: one per event type (a routing key on the
``events`` topic exchange), one per service's events queue and dead-letter queue, one per
service's command route (``svc.tasks`` on its own exchange). Operations say who publishes
an event type (``publishes``), who consumes it (``subscribes``) and which service serves
each command. Messages are the contracts' JSON Schemas; bindings carry the AMQP details
(exchange types, durability, queue arguments and bindings as ``x-`` extensions).
"""

from collections.abc import Callable, Iterable
from typing import Any

from shared.contracts.compatibility import inline
from shared.contracts.models import Command, Event
from shared.core.topology import EVENTS_EXCHANGE, UNROUTED, ServiceTopology

AMQP = "0.3.0"  # the AMQP bindings' version
FRAMING = (
    "Messages use Celery's message protocol 2 (content type `application/json`, headers"
    ' `task` and `id`): an event\'s body is `[[], {"event": ENVELOPE}, {}]`, published to'
    " exchange `events` with the event type as routing key; a command's body is"
    " `[[], ARGUMENTS, {}]`, published to its owner's exchange with routing key"
    " `<owner>.tasks`. The payload schemas below are ENVELOPE and ARGUMENTS."
)


def event_key(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def _summary(contract: type) -> str:
    return (contract.__doc__ or contract.__name__).strip().splitlines()[0]


def _message(key: str, name: str, title: str, contract: type) -> dict[str, Any]:
    headers = {
        "type": "object",
        "required": ["task", "id"],
        "properties": {
            "task": {"type": "string", "const": name},
            "id": {"type": "string", "maxLength": 255, "description": "event id / task id"},
        },
    }
    return {
        "name": name,
        "title": title,
        "summary": _summary(contract),
        "contentType": "application/json",
        "headers": headers,
        "payload": _ref("components", "schemas", key),
        "bindings": {
            "amqp": {"contentEncoding": "utf-8", "messageType": name, "bindingVersion": AMQP}
        },
    }


def _exchange(name: str, kind: str = "topic") -> dict[str, Any]:
    exchange = {"name": name, "type": kind, "durable": True, "autoDelete": False}
    return {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": AMQP}}


def _queue(name: str, arguments: dict[str, Any], bound: list[dict[str, str]]) -> dict[str, Any]:
    queue = {"name": name, "durable": True, "exclusive": False, "autoDelete": False}
    return {
        "amqp": {
            "is": "queue", "queue": queue, "bindingVersion": AMQP,
            "x-arguments": arguments, "x-bindings": bound,
        }
    }  # fmt: skip


def document(services: Iterable[ServiceTopology]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``services`` and every contract they exchange."""
    services = sorted(services, key=lambda s: s.name)
    events = dict(sorted(Event.registry.items()))
    names = {s.name for s in services}
    commands = {t: c for t, c in sorted(Command.registry.items()) if c.owner() in names}

    def versions(event_type: str) -> dict[str, Any]:
        return {
            event_key(t, v): _ref("components", "messages", event_key(t, v))
            for t, v in events
            if t == event_type
        }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event_type in sorted({t for t, _ in events}):
        channels[f"events.{event_type}"] = {
            "address": event_type,
            "title": f"{event_type} on {EVENTS_EXCHANGE}",
            "description": f"Routing key `{event_type}` on the `{EVENTS_EXCHANGE}` topic"
            f" exchange; nobody bound: kept in `{UNROUTED}` (its alternate exchange).",
            "messages": versions(event_type),
            "bindings": _exchange(EVENTS_EXCHANGE),
        }
    for topo in services:
        _service(topo, channels, operations, versions, commands)
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "eventful", "version": "1.0.0", "description": FRAMING},
        "defaultContentType": "application/json",
        "servers": SERVERS,
        "channels": channels,
        "operations": operations,
        "components": _components(events, commands),
    }


SERVERS = {
    "rabbitmq": {
        "host": "localhost:5672",
        "protocol": "amqp",
        "protocolVersion": "0.9.1",
        "description": "The deployment's AMQP_URL; one broker user per service.",
    }
}


def _components(
    events: dict[tuple[str, int], type[Event]], commands: dict[str, type[Command]]
) -> dict[str, Any]:
    """The schema and the message of every event version and command."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for (event_type, version), contract in events.items():
        key = event_key(event_type, version)
        schemas[key] = inline(contract.model_json_schema())
        messages[key] = _message(key, event_type, f"{event_type} v{version}", contract)
    for task, command in commands.items():
        schemas[task] = inline(command.model_json_schema())
        messages[task] = _message(task, task, task, command)
    return {"schemas": schemas, "messages": messages}


def _service(
    topo: ServiceTopology,
    channels: dict[str, Any],
    operations: dict[str, Any],
    versions: Callable[[str], dict[str, Any]],
    commands: dict[str, type[Command]],
) -> None:
    """The channels a service owns and its operations."""
    for event_type in topo.publishes:
        operations[f"{topo.name}.publishes.{event_type}"] = {
            "action": "send",
            "title": f"{topo.name} publishes {event_type}",
            "channel": _ref("channels", f"events.{event_type}"),
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP}},
        }
    if topo.subscribes:
        _subscriber(topo, channels, operations, versions)
    served = {t: c for t, c in commands.items() if c.owner() == topo.name}
    if served:
        _server(topo, channels, operations, served)
    channels[topo.dlq] = {
        "address": topo.dlq,
        "title": f"{topo.name}'s dead letters",
        "description": f"Every message {topo.name} could not handle, fanned out by"
        f" `{topo.dlx}`, with `x-dead-letter-reason` and the other `x-` headers.",
        "bindings": _queue(
            topo.dlq, topo.dead_letter_queue().queue_arguments or {}, [{"exchange": topo.dlx}]
        ),
    }


def _subscriber(
    topo: ServiceTopology,
    channels: dict[str, Any],
    operations: dict[str, Any],
    versions: Callable[[str], dict[str, Any]],
) -> None:
    """A subscribing service's events queue, and an operation per event type it consumes."""
    queue_messages = {k: v for t in topo.subscribes for k, v in versions(t).items()}
    bound = [{"exchange": topo.name, "routingKey": topo.events_queue}]
    bound += [{"exchange": EVENTS_EXCHANGE, "routingKey": t} for t in topo.subscribes]
    channels[topo.events_queue] = {
        "address": topo.events_queue,
        "title": f"{topo.name}'s events queue",
        "description": "Quorum queue; every version of each subscribed event type is"
        " accepted (upcast or read as the handler's version) or dead-lettered.",
        "messages": queue_messages,
        "bindings": _queue(topo.events_queue, topo.work_queue_arguments(), bound),
    }
    for event_type in topo.subscribes:
        operations[f"{topo.name}.subscribes.{event_type}"] = {
            "action": "receive",
            "title": f"{topo.name} consumes {event_type}",
            "channel": _ref("channels", topo.events_queue),
            "messages": [
                _ref("channels", topo.events_queue, "messages", k) for k in versions(event_type)
            ],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP}},
        }


def _server(
    topo: ServiceTopology,
    channels: dict[str, Any],
    operations: dict[str, Any],
    served: dict[str, type[Command]],
) -> None:
    """A service's commands queue, and an operation per command it serves."""
    channels[topo.tasks_queue] = {
        "address": topo.tasks_queue,
        "title": f"{topo.name}'s commands",
        "description": f"Routing key `{topo.tasks_queue}` on the `{topo.name}` exchange.",
        "messages": {t: _ref("components", "messages", t) for t in served},
        "bindings": _exchange(topo.name),
    }
    for task in served:
        operations[f"{topo.name}.serves.{task}"] = {
            "action": "receive",
            "title": f"{topo.name} serves {task}",
            "channel": _ref("channels", topo.tasks_queue),
            "messages": [_ref("channels", topo.tasks_queue, "messages", task)],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP}},
        }
