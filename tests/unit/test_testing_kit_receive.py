"""shared.Harness.receive runs a message as it arrives through the worker's own receive path,
retry policy and dead-letter decision, in memory: what the worker would do, in milliseconds.
The table tests hold it to the outcomes the integration tests see on the real broker."""

import json
import uuid

import pytest
from amqp.exceptions import ConnectionError as AmqpConnectionError

from contracts import NotificationPayload, NotificationSent, UserSignedUp
from shared import RetryPolicy
from shared.core.topology import ServiceTopology
from shared.service.declaration import Service
from shared.service.testing import Harness
from tests.integration import test_malformed_messages
from tests.support import JSON, envelope, framed, headers

service = Service(
    ServiceTopology("kit", subscribes=("user.signed_up",), publishes=("notification.sent",))
)


class Busy(Exception):
    """A transient failure the welcome's retry policy retries."""


RETRY = RetryPolicy(autoretry_for=(Busy,), max_retries=2, retry_backoff=10, retry_jitter=False)


@service.handles(UserSignedUp, retry=RETRY)
def welcome(event: UserSignedUp, mailer, publish) -> str:
    mailer.send(str(event.payload.email))
    publish(
        NotificationSent(
            source="kit",
            payload=NotificationPayload(
                delivery_id=str(event.id), kind="welcome", channel="email",
                recipient=str(event.payload.email), caused_by=event.id,
            ),
        )
    )  # fmt: skip
    return "sent"


class Mailer:
    def __init__(self, failures: int = 0) -> None:
        self.failures, self.sent = failures, []

    def send(self, to: str) -> None:
        if self.failures:
            self.failures -= 1
            raise Busy(to)
        self.sent.append(to)


def signup() -> UserSignedUp:
    return UserSignedUp(
        source="signup", payload={"user_id": uuid.uuid4(), "email": "a@example.com", "name": "A"}
    )


def from_upstream(harness: Harness, body: bytes, props: dict, hdrs: dict | None, **route):
    """What an upstream's plain AMQP publish (``tests.support.publish_raw``) delivers."""
    route = route or {"exchange": "events", "routing_key": "user.signed_up"}
    return harness.arriving(body, hdrs, content_type=props.get("content_type"),
                            content_encoding=props.get("content_encoding"), **route)  # fmt: skip


def test_a_valid_event_is_handled_and_what_it_publishes_is_captured():
    mailer = Mailer()
    harness = Harness(service, mailer=mailer)
    outcomes = harness.receive(harness.event(signup()))
    assert {name: o.kind for name, o in outcomes.items()} == {"kit.welcome": "handled"}
    assert outcomes["kit.welcome"].result == "sent"
    assert mailer.sent == ["a@example.com"]
    assert [e.type for e in harness.published] == ["notification.sent"]


def test_an_envelope_from_an_upstream_in_another_language_is_handled():
    mailer = Mailer()
    harness = Harness(service, mailer=mailer)
    message = from_upstream(harness, json.dumps(envelope("u@example.com")).encode(), JSON, {})
    assert harness.receive(message)["kit.welcome"].kind == "handled"
    assert mailer.sent == ["u@example.com"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"[[], {", "undecodable-body"), (b'{"task": "user.signed_up"}', "malformed-body")],
)
def test_a_malformed_body_is_dead_lettered_with_its_reason_and_nothing_runs(body, reason):
    mailer = Mailer()
    harness = Harness(service, mailer=mailer)
    outcome = harness.receive(from_upstream(harness, body, JSON, headers(envelope("m@x.org"))))
    assert outcome["user.signed_up"].kind == "dead-lettered"
    assert outcome["user.signed_up"].reason == reason
    assert mailer.sent == [] and harness.published == []


def test_an_event_that_breaks_its_contract_is_dead_lettered_rejected():
    harness = Harness(service, mailer=Mailer())
    e = envelope("m@example.com")
    del e["payload"]["email"]
    outcome = harness.receive(from_upstream(harness, framed(e), JSON, headers(e)))
    assert outcome["user.signed_up"].reason == "rejected"
    assert "email" in str(outcome["user.signed_up"].exc.reason)


def test_an_internal_task_from_a_sender_not_allowed_is_dead_lettered_not_allowed():
    mailer = Mailer()
    harness = Harness(service, mailer=mailer)
    e = envelope("x@example.com")
    message = harness.arriving(framed(e), headers(e, task="kit.welcome"), exchange="kit",
                               routing_key="kit.tasks", user_id="notifier")  # fmt: skip
    assert harness.receive(message)["kit.welcome"].reason == "not-allowed"
    assert mailer.sent == []


def test_a_task_the_service_does_not_have_is_dead_lettered_unknown_task():
    harness = Harness(service, mailer=Mailer())
    e = envelope("u@example.com")
    message = harness.arriving(framed(e), headers(e, task="kit.nothing"), exchange="kit",
                               routing_key="kit.tasks", user_id="guest")  # fmt: skip
    assert harness.receive(message)["kit.nothing"].reason == "unknown-task"


def test_a_retryable_failure_is_retried_per_its_policy_then_dead_lettered():
    mailer = Mailer(failures=10)
    harness = Harness(service, mailer=mailer)
    first = harness.receive(harness.event(signup()))["kit.welcome"]
    assert (first.kind, first.countdown) == ("retried", RETRY.delays()[0])  # 10 s
    second = harness.receive(first.retry)["kit.welcome"]
    assert (second.kind, second.countdown) == ("retried", RETRY.delays()[1])  # 20 s
    assert second.retry.headers["retries"] == 2
    last = harness.receive(second.retry)["kit.welcome"]
    assert (last.kind, last.reason) == ("dead-lettered", "task-failed")
    assert isinstance(last.exc, Busy)
    assert harness.published == []


def test_a_retry_that_succeeds_is_handled():
    harness = Harness(service, mailer=Mailer(failures=1))
    retried = harness.receive(harness.event(signup()))["kit.welcome"]
    assert harness.receive(retried.retry)["kit.welcome"].kind == "handled"
    assert len(harness.published) == 1


def test_a_handler_that_loses_the_broker_is_requeued_not_dead_lettered():
    class Away(Mailer):
        def send(self, to: str) -> None:
            raise AmqpConnectionError("connection reset")

    outcome = Harness(service, mailer=Away()).receive(Harness(service).event(signup()))
    assert outcome["kit.welcome"].kind == "requeued"


#: Every case test_malformed_messages.py asserts on the real broker: the kit must agree.
MALFORMED = list(test_malformed_messages.cases())


@pytest.mark.parametrize("case", MALFORMED)
def test_the_kit_dead_letters_as_the_worker_does_on_the_broker(case):
    body, props, hdrs, reason = test_malformed_messages.cases()[case]
    harness = Harness(service, mailer=Mailer())
    [outcome] = harness.receive(from_upstream(harness, body, props, hdrs)).values()
    assert (outcome.kind, outcome.reason) == ("dead-lettered", reason)


DOCUMENT = {"kind": "daily"}
#: test_not_allowed.py's attacks, sent by notifier to reports; here to ``kit``.
NOT_ALLOWED = {
    "internal-task-unsigned": ({}, "kit", "kit.tasks", "kit.welcome"),
    "internal-task-signed": ({"user_id": "notifier"}, "kit", "kit.tasks", "kit.welcome"),
    "forged-header-on-own-event": ({}, "events", "notification.sent", "user.signed_up"),
}


@pytest.mark.parametrize("case", NOT_ALLOWED)
def test_the_kit_refuses_what_the_worker_refuses_on_the_broker(case):
    props, exchange, routing_key, task = NOT_ALLOWED[case]
    mailer = Mailer()
    harness = Harness(service, mailer=mailer)
    e = envelope("f@example.com")
    message = harness.arriving(framed(e), headers(e, task=task), exchange=exchange,
                               routing_key=routing_key, **props)  # fmt: skip
    assert harness.receive(message)[task].reason == "not-allowed"
    assert mailer.sent == []
