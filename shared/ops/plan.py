"""``topology plan``: what differs between the declared topology and the live broker.

Reads the live side through the management API: queues (type, arguments), exchanges,
bindings, policies and operator policies (none are declared: any policy on the vhost can
override queue behaviour, so it is reported; an operator policy's ``delivery-limit``, for
one, lowers a DLQ's and drops dead letters that are read often) and each service's user
with its permissions. Transient names Celery creates per process (pidbox and reply
queues, event receivers) are ignored.
"""

import re
from typing import Any

from shared.ops.definitions import Definitions, access, topology
from shared.ops.management import Management
from shared.ops.permissions import CredentialSettings

#: Celery's control and event exchanges, declared by workers, Flower and `celery inspect`.
CELERY_AUX = re.compile(r"^((reply\.)?[\w-]+\.pidbox|([\w-]+\.)?celeryev)$")


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.") or CELERY_AUX.match(name) is not None


def _durable(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        i["name"]: i
        for i in items
        if i.get("durable") and not i.get("auto_delete") and not i.get("exclusive")
    }


def _diff_named(
    kind: str,
    declared: list[dict[str, Any]],
    live: list[dict[str, Any]],
    fields: tuple[str, ...],
) -> list[str]:
    want = {i["name"]: i for i in declared}
    have = {n: i for n, i in _durable(live).items() if not _builtin(n)}
    drift = [f"- {kind} {n}: declared, missing on the broker" for n in sorted(want.keys() - have)]
    drift += [f"+ {kind} {n}: on the broker, not declared" for n in sorted(have.keys() - want)]
    for name in sorted(want.keys() & have.keys()):
        for field in fields:
            if field == "arguments":
                drift += _diff_arguments(kind, name, want[name]["arguments"], have[name])
            elif want[name][field] != have[name].get(field):
                drift.append(
                    f"~ {kind} {name}: {field} declared {want[name][field]!r},"
                    f" live {have[name].get(field)!r}"
                )
    return drift


def _diff_arguments(kind: str, name: str, want: dict[str, Any], live: dict[str, Any]) -> list[str]:
    have = dict(live.get("arguments") or {})
    drift = []
    for key in sorted(want.keys() | have.keys()):
        if want.get(key) != have.get(key):
            declared, now = want.get(key), have.get(key)
            drift.append(f"~ {kind} {name}: argument {key} declared {declared!r}, live {now!r}")
    return drift


def _binding_key(b: dict[str, Any]) -> tuple[str, str, str, str]:
    return (b["source"], b["destination_type"], b["destination"], b["routing_key"])


def _diff_bindings(
    declared: list[dict[str, Any]], live: list[dict[str, Any]], queues: set[str]
) -> list[str]:
    want = {_binding_key(b) for b in declared}
    have = {
        _binding_key(b)
        for b in live
        if b["source"] and (b["destination_type"] == "exchange" or b["destination"] in queues)
    }

    def show(k: tuple[str, str, str, str]) -> str:
        return f"{k[0]} -> {k[1]} {k[2]} (routing key {k[3]!r})"

    drift = [f"- binding {show(k)}: declared, missing on the broker" for k in sorted(want - have)]
    drift += [f"+ binding {show(k)}: on the broker, not declared" for k in sorted(have - want)]
    return drift


def _diff_users(management: Management, vhost: str, declared: Definitions) -> list[str]:
    drift = []
    for user in declared["users"]:
        if management.user(user["name"]) is None:
            drift.append(f"- user {user['name']}: declared, missing on the broker")
    for perm in declared["permissions"]:
        live = management.permissions(vhost, perm["user"]) or {}
        for field in ("configure", "write", "read"):
            if live.get(field) != perm[field]:
                drift.append(
                    f"~ user {perm['user']}: {field} permission declared {perm[field]!r},"
                    f" live {live.get(field)!r}"
                )
    for user in declared["users"]:
        want = {
            t["exchange"]: (t["write"], t["read"])
            for t in declared["topic_permissions"]
            if t["user"] == user["name"]
        }
        have = {
            t["exchange"]: (t["write"], t["read"])
            for t in management.topic_permissions(vhost, user["name"])
            # ``apply`` narrows a stale one to nothing: the HTTP API cannot delete just it.
            if t["exchange"] in want or (t["write"], t["read"]) != ("^$", "^$")
        }
        for exchange in sorted(want.keys() | have.keys()):
            if want.get(exchange) != have.get(exchange):
                drift.append(
                    f"~ user {user['name']}: topic permission on {exchange} declared"
                    f" {want.get(exchange)!r}, live {have.get(exchange)!r}"
                )
    return drift


def plan(management: Management, vhost: str, creds: CredentialSettings) -> list[str]:
    """One line per difference; an empty list means the broker is as declared."""
    declared = topology()
    live_queues = management.collection("queues", vhost)
    drift = _diff_named("queue", declared["queues"], live_queues, ("durable", "arguments"))
    drift += _diff_named(
        "exchange",
        declared["exchanges"],
        management.collection("exchanges", vhost),
        ("type", "durable", "arguments"),
    )
    drift += _diff_bindings(
        declared["bindings"],
        management.collection("bindings", vhost),
        set(_durable(live_queues)),
    )
    for kind, collection in (("policy", "policies"), ("operator policy", "operator-policies")):
        drift += [
            f"+ {kind} {p['name']}: pattern {p['pattern']!r} applies {p['definition']},"
            " not declared"
            for p in management.collection(collection, vhost)
        ]
    drift += _diff_users(management, vhost, access(vhost, creds))
    return drift
