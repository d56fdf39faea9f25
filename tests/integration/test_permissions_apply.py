"""``topology apply`` on a live system: no moment in which a service's routing keys are open."""

import amqp
import pytest

from shared.core.topology import UNROUTED
from shared.ops.apply import apply_users
from shared.ops.management import Management
from tests.integration.test_ops_isolation import as_service, publish_event

#: Per-service users and roles for this module (created by ``topology apply``).


class AttackAfterEachStep(Management):
    """The management API, with notifier publishing a forbidden routing key after every
    change ``apply`` makes: what a service running during a deploy could do then."""

    def __init__(self, urls: str, attack) -> None:
        super().__init__(urls)
        self.attack = attack
        self.steps: list[str] = []

    def request(self, method: str, path: str, **kwargs):
        answer = super().request(method, path, **kwargs)
        if method != "GET":
            self.steps.append(f"{method} {path}")
            self.attack(self.steps[-1])
        return answer


def test_reapplying_permissions_never_lets_a_service_publish_a_forbidden_routing_key(
    stack,
    creds,
):
    stale = ("gone.exchange", ".*", ".*")
    Management(stack.management_url).grant_topic(stack.vhost, creds.user("notifier"), *stale)

    def attack(step: str) -> None:
        refused = pytest.raises(amqp.exceptions.AccessRefused, match="report.generated")
        with as_service(stack, creds, "notifier") as conn, refused:
            publish_event(conn, "report.generated")

    management = AttackAfterEachStep(stack.management_url, attack)
    apply_users(management, stack.vhost, creds)
    assert any("topic-permissions" in step for step in management.steps)
    live = Management(stack.management_url).topic_permissions(stack.vhost, creds.user("notifier"))
    assert {(t["exchange"], t["write"], t["read"]) for t in live} >= {("gone.exchange", "^$", "^$")}


def test_reapplying_takes_back_the_configure_right_an_older_deploy_gave_on_shared_objects(
    stack,
    creds,
):
    """An upgraded broker: a service user from before still holds configure and read on the
    delay levels and ``events.unrouted``; the next ``topology apply`` takes them back."""
    management = Management(stack.management_url)
    user = creds.user("notifier")
    management.grant(stack.vhost, user, ".*", ".*", ".*")
    management.grant_topic(stack.vhost, user, "celery_delayed_3", ".*", ".*")
    apply_users(management, stack.vhost, creds)
    for attack in (
        lambda ch: ch.queue_delete("celery_delayed_27"),
        lambda ch: ch.queue_purge(UNROUTED),
        lambda ch: ch.queue_unbind("celery_delayed_3", "celery_delayed_3", "*." * 24 + "1.#"),
    ):
        refused = pytest.raises(amqp.exceptions.AccessRefused)
        with as_service(stack, creds, "notifier") as conn, refused:
            attack(conn.channel())
    stale = {t["exchange"]: t for t in management.topic_permissions(stack.vhost, user)}
    assert (stale["celery_delayed_3"]["write"], stale["celery_delayed_3"]["read"]) == ("^$", "^$")
