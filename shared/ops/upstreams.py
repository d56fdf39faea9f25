"""Broker users for upstream publishers: ``eventful upstream add|list|remove``.

An upstream (a CRM, a billing system) only publishes events its declaration names to
``events``: write on that exchange alone, topic permissions narrowing the routing keys to
those event types, no configure and no read, so it cannot declare, bind or consume
anything. The broker knows an upstream by the user tag ``eventful-upstream``; its event
types are read back from its topic permission, so the broker is the only record.
"""

import re
import secrets
from dataclasses import dataclass

from shared.core.topology import EVENTS_EXCHANGE, SERVICES
from shared.ops.management import Management
from shared.ops.permissions import CredentialSettings

TAG = "eventful-upstream"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Upstream:
    name: str
    user: str
    publishes: tuple[str, ...]


def subscribed_types() -> set[str]:
    """Event types some service consumes: the only ones worth publishing."""
    return {t for topo in SERVICES.values() for t in topo.subscribes}


def topic_pattern(publishes: tuple[str, ...]) -> str:
    return "^(" + "|".join(re.escape(t) for t in publishes) + ")$"


def _types_of(pattern: str) -> tuple[str, ...]:
    inner = pattern.removeprefix("^(").removesuffix(")$")
    return tuple(re.sub(r"\\(.)", r"\1", t) for t in inner.split("|") if t)


def add(
    management: Management,
    vhost: str,
    creds: CredentialSettings,
    name: str,
    publishes: tuple[str, ...],
) -> str:
    """Create (or reset) the upstream's user on ``vhost``; returns its new password."""
    if not NAME.match(name) or name in SERVICES:
        raise ValueError(f"{name!r}: lowercase letters, digits and '-', and not a service's name")
    unknown = sorted(set(publishes) - subscribed_types())
    if not publishes or unknown:
        raise ValueError(
            f"event types no service subscribes to: {', '.join(unknown) or '(none given)'}"
            f" (known: {', '.join(sorted(subscribed_types()))})"
        )
    user, password = creds.user(name), secrets.token_urlsafe(24)
    management.put_user(user, password, tags=TAG)
    # Topic permission first, replaced in place: never a moment with any routing key open.
    management.grant_topic(vhost, user, EVENTS_EXCHANGE, topic_pattern(publishes), "^$")
    management.grant(
        vhost, user, configure="^$", write=f"^{re.escape(EVENTS_EXCHANGE)}$", read="^$"
    )
    return password


def amqp_url(creds: CredentialSettings, name: str, password: str, base: str) -> str:
    """``base`` as the upstream's user: what to hand to its operators, once."""
    passwords = {**creds.service_passwords, name: password}
    return creds.model_copy(update={"service_passwords": passwords}).amqp_url(name, base)


def upstreams(management: Management, vhost: str, creds: CredentialSettings) -> list[Upstream]:
    """Every upstream user with permissions on ``vhost`` (of this prefix)."""
    found = []
    prefix = creds.service_user_prefix
    for user in management.request("GET", "/users"):
        tags = user.get("tags") or []
        tags = tags.split(",") if isinstance(tags, str) else tags
        if TAG not in tags or not user["name"].startswith(prefix):
            continue
        if management.permissions(vhost, user["name"]) is None:
            continue
        topics = management.topic_permissions(vhost, user["name"])
        publishes = [_types_of(t["write"]) for t in topics if t["exchange"] == EVENTS_EXCHANGE]
        found.append(Upstream(user["name"].removeprefix(prefix), user["name"], sum(publishes, ())))
    return sorted(found, key=lambda u: u.name)


def remove(management: Management, vhost: str, creds: CredentialSettings, name: str) -> None:
    """Delete the upstream's user (users are global: on every vhost)."""
    if name not in {u.name for u in upstreams(management, vhost, creds)}:
        raise KeyError(f"no upstream named {name!r} on vhost {vhost!r}")
    management.delete_user(creds.user(name))
