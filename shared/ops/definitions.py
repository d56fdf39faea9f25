"""The declared broker state as RabbitMQ definitions: what ``plan`` diffs and ``export`` writes.

Built from the same kombu objects the workers declare (``shared.core.topology``), plus the
layout of Celery's native delayed delivery (kombu's
``declare_native_delayed_delivery_exchanges_and_queues``: 28 TTL levels that dead-letter
into each other, then ``celery_delayed_delivery`` forwarding to each service's exchange).
"""

import base64
import hashlib
import os
from typing import Any

from kombu import Queue

from shared.core.topology import SERVICES, events_exchange, unrouted_queue
from shared.ops.permissions import (
    DELAY_LEVELS,
    DELAYED_DELIVERY,
    CredentialSettings,
    broker_permissions,
)

Definitions = dict[str, Any]


def _queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "durable": True, "auto_delete": False, "arguments": arguments}


def _exchange(name: str, type_: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": arguments or {},
    }


def _binding(
    source: str, destination: str, routing_key: str, kind: str = "queue"
) -> dict[str, Any]:
    return {
        "source": source,
        "destination": destination,
        "destination_type": kind,
        "routing_key": routing_key,
        "arguments": {},
    }


def _sources(queue: Queue) -> list[tuple[Any, str]]:
    """(exchange, routing key) pairs kombu binds: ``exchange=`` is ignored once bindings exist."""
    if queue.exchange is not None and queue.exchange.name:
        return [(queue.exchange, queue.routing_key or "")]
    return [(b.exchange, b.routing_key or "") for b in queue.bindings]


def _declared(queue: Queue, into: Definitions) -> None:
    """A kombu queue as Celery declares it: its exchange, itself, its bindings."""
    into["queues"].append(_queue(queue.name, dict(queue.queue_arguments or {})))
    for exchange, routing_key in _sources(queue):
        into["exchanges"].append(
            _exchange(exchange.name, exchange.type, dict(exchange.arguments or {}))
        )
        into["bindings"].append(_binding(exchange.name, queue.name, routing_key))


def _delayed_delivery(into: Definitions, work_queues: list[Queue]) -> None:
    """Celery's delay levels, and each work queue reachable from ``celery_delayed_delivery``."""
    top = DELAY_LEVELS - 1
    for level in range(top, -1, -1):
        name = f"celery_delayed_{level}"
        wildcards = "*." * (top - level)
        into["exchanges"].append(_exchange(name, "topic"))
        into["queues"].append(
            _queue(
                name,
                {
                    "x-queue-type": "quorum",
                    "x-overflow": "reject-publish",
                    "x-message-ttl": 2**level * 1000,
                    "x-dead-letter-exchange": f"celery_delayed_{level - 1}"
                    if level
                    else DELAYED_DELIVERY,
                    "x-dead-letter-strategy": "at-least-once",
                },
            )
        )
        into["bindings"].append(_binding(name, name, wildcards + "1.#"))
        if level:
            into["bindings"].append(
                _binding(name, f"celery_delayed_{level - 1}", wildcards + "0.#", "exchange")
            )
    into["exchanges"].append(_exchange(DELAYED_DELIVERY, "topic"))
    into["bindings"].append(
        _binding("celery_delayed_0", DELAYED_DELIVERY, "*." * top + "0.#", "exchange")
    )
    for queue in work_queues:
        for exchange, routing_key in _sources(queue):
            key = routing_key if routing_key.startswith("#") else f"#.{routing_key}"
            into["bindings"].append(_binding(DELAYED_DELIVERY, exchange.name, key, "exchange"))
            into["bindings"].append(_binding(exchange.name, queue.name, key))


def _unique(items: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    for item in items:
        seen.setdefault(tuple(str(item[k]) for k in key), item)
    return list(seen.values())


def topology() -> Definitions:
    """Exchanges, queues and bindings of the whole system, without vhost or users."""
    into: Definitions = {"exchanges": [], "queues": [], "bindings": []}
    into["exchanges"].append(
        _exchange(events_exchange.name, "topic", dict(events_exchange.arguments or {}))
    )
    _declared(unrouted_queue, into)
    work_queues = []
    for topo in SERVICES.values():
        _declared(topo.dead_letter_queue(), into)
        for queue in topo.work_queues():
            _declared(queue, into)
            work_queues.append(queue)
    _delayed_delivery(into, work_queues)
    into["exchanges"] = _unique(into["exchanges"], ("name",))
    into["bindings"] = _unique(
        into["bindings"], ("source", "destination", "destination_type", "routing_key")
    )
    return into


def password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def access(vhost: str, creds: CredentialSettings) -> Definitions:
    """Each service's user, its permissions and topic permissions on ``vhost``."""
    users, permissions, topics = [], [], []
    for name, topo in SERVICES.items():
        user = creds.user(name)
        perms = broker_permissions(topo)
        users.append(
            {
                "name": user,
                "password_hash": password_hash(creds.password(name)),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        permissions.append(
            {
                "user": user,
                "vhost": vhost,
                "configure": perms.configure,
                "write": perms.write,
                "read": perms.read,
            }
        )
        for exchange, (write, read) in perms.topics.items():
            topics.append(
                {"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
            )
    return {"users": users, "permissions": permissions, "topic_permissions": topics}


def export(vhost: str, creds: CredentialSettings) -> Definitions:
    """A definitions file the management UI imports (*Overview*, *Import definitions*)."""
    declared = topology()
    for kind in ("exchanges", "queues", "bindings"):
        for item in declared[kind]:
            item["vhost"] = vhost
    return {
        "vhosts": [{"name": vhost}],
        **access(vhost, creds),
        "policies": [],
        "parameters": [],
        **declared,
    }
