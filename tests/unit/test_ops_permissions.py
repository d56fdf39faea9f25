"""Per-service permissions as data: what each service's regexes let through and refuse."""

import re

import pytest

from shared.core.topology import DELAY_LEVELS, SERVICES, SHARED_OBJECTS
from shared.ops.definitions import topology
from shared.ops.permissions import CredentialSettings, broker_permissions

DELAY = "0." * 27 + "1."


def allows(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None


def declared_by(service: str) -> set[str]:
    """Names a worker of ``service`` declares: its own, nothing shared, no other's."""
    declared = topology()
    names = {q["name"] for q in declared["queues"]} | {e["name"] for e in declared["exchanges"]}
    return {n for n in names if n.split(".")[0] == service}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_declare_everything_its_worker_declares(service):
    perms = broker_permissions(SERVICES[service])
    for name in declared_by(service) | {f"celery@host.{service}.pidbox"}:
        assert allows(perms.configure, name), name
        assert allows(perms.read, name), name


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_not_configure_or_read_what_the_vhost_shares(service):
    """No delete, purge, get or unbind of the delay levels or events.unrouted; it may only
    publish to events and the top delay level."""
    perms = broker_permissions(SERVICES[service])
    for kind, name in SHARED_OBJECTS:
        assert not allows(perms.configure, name), name
        assert kind == "exchange" or not allows(perms.read, name), name
    assert not any(allows(perms.read, f"celery_delayed_{n}") for n in range(DELAY_LEVELS))
    written = {name for _, name in SHARED_OBJECTS if allows(perms.write, name)}
    assert written == {"events", "celery_delayed_27"}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_not_configure_or_read_another_services_queues(service):
    perms = broker_permissions(SERVICES[service])
    for other in SERVICES.values():
        if other.name == service:
            continue
        for name in [q.name for q in other.work_queues()] + [other.dlq, f"x.{other.name}.pidbox"]:
            assert not allows(perms.configure, name), name
            assert not allows(perms.read, name), name
    assert not allows(perms.read, "celeryev.5c9afc89")  # gossip's queue: not namespaced


def test_notifier_publishes_only_its_own_event_types_and_commands_to_owners():
    perms = broker_permissions(SERVICES["notifier"])
    write, read = perms.topics["events"]
    assert allows(write, "notification.sent") and allows(write, "notification.failed")
    assert not allows(write, "report.generated") and not allows(write, "user.signed_up")
    assert allows(read, "user.signed_up") and allows(read, "report.generated")
    assert not allows(read, "#.report.generated")  # kombu's delayed-event binding: operator's
    assert not allows(read, "#") and not allows(read, "notification.sent")
    assert allows(perms.topics["reports"][0], "reports.tasks")
    assert not allows(perms.topics["reports"][0], "reports.events")


def test_delayed_delivery_cannot_smuggle_events_or_reach_another_services_events_queue():
    write, _ = broker_permissions(SERVICES["notifier"]).topics["celery_delayed_27"]
    assert allows(write, DELAY + "notifier.tasks") and allows(write, DELAY + "reports.tasks")
    assert not allows(write, DELAY + "reports.events")
    assert not allows(write, DELAY + "user.signed_up")


def test_service_urls_keep_hosts_vhost_and_failover_order_and_quote_the_password():
    creds = CredentialSettings(service_user_prefix="prod-", service_passwords={"signup": "p@ss/w"})
    base = "amqp://guest:guest@a:5672/v1;amqp://guest:guest@b/v1"
    assert creds.amqp_url("signup", base) == (
        "amqp://prod-signup:p%40ss%2Fw@a:5672/v1;amqp://prod-signup:p%40ss%2Fw@b:5672/v1"
    )
    db = creds.database_url("reports", "postgresql+psycopg://postgres@db:5432/eventful")
    assert db == "postgresql+psycopg://prod-reports:reports-local@db:5432/eventful"
