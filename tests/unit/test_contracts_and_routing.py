"""Contracts, routing and failure classification: pure logic, no I/O."""

import uuid

import pytest
from celery.exceptions import Reject, Retry, TimeLimitExceeded, WorkerLostError
from kombu.exceptions import ContentDisallowed, DecodeError
from pydantic import ValidationError

from contracts import SendEmail, UserSignedUp
from shared.contracts.models import Event, event_class
from shared.core.topology import SERVICES, service
from shared.worker.deadletter import is_final, original_route, reason_for
from shared.worker.routing import router_for


def test_an_event_round_trips_through_its_wire_form():
    event = UserSignedUp(
        source="signup", payload={"user_id": uuid.uuid4(), "email": "a@example.com", "name": "A"}
    )
    wire = event.model_dump(mode="json")
    assert wire["type"] == "user.signed_up" and wire["version"] == 1
    assert UserSignedUp.model_validate(wire) == event
    assert event_class("user.signed_up", 1) is UserSignedUp


def test_an_event_with_a_wrong_version_or_missing_field_is_invalid():
    good = UserSignedUp(
        source="x", payload={"user_id": uuid.uuid4(), "email": "a@example.com", "name": "A"}
    ).model_dump(mode="json")
    with pytest.raises(ValidationError):
        UserSignedUp.model_validate({**good, "version": 2})
    with pytest.raises(ValidationError):
        UserSignedUp.model_validate({**good, "payload": {"name": "A"}})


def test_every_subscribed_event_type_has_a_contract():
    for topo in SERVICES.values():
        for event_type in topo.subscribes + topo.publishes:
            assert issubclass(event_class(event_type), Event)


def test_a_command_is_routed_to_its_owner_and_an_event_to_the_events_exchange():
    route = router_for(SERVICES["reports"], {"reports.generate_report": "reports.tasks"})
    assert route(SendEmail.task, (), {}, {}) == {
        "exchange": "notifier",
        "exchange_type": "topic",
        "routing_key": "notifier.tasks",
    }
    assert route("report.generated", (), {}, {})["exchange"] == "events"
    assert route("reports.generate_report", (), {}, {}) == {"queue": "reports.tasks"}
    assert route("reports.add", (), {}, {}) == {"queue": "reports.tasks"}
    assert route("celery.chord_unlock", (), {}, {}) is None
    assert route("no.such.thing", (), {}, {}) is None


def test_work_queues_are_quorum_with_a_dead_letter_exchange_and_delivery_limit():
    for topo in SERVICES.values():
        for queue in topo.work_queues():
            args = queue.queue_arguments
            assert args["x-queue-type"] == "quorum"
            assert args["x-dead-letter-exchange"] == f"{topo.name}.dlx"
            assert args["x-delivery-limit"] > 0
        assert topo.dead_letter_queue().name == f"{topo.name}.dlq"


def test_an_unknown_service_name_is_a_clear_error():
    with pytest.raises(KeyError, match=f"known services: {', '.join(sorted(SERVICES))}"):
        service("billing")


@pytest.mark.parametrize(
    ("exc", "final", "reason"),
    [
        (ValueError("boom"), True, "task-failed"),
        (Reject("bad", requeue=False), True, "rejected"),
        (Reject("again", requeue=True), False, "rejected"),
        (Retry("later"), False, "task-failed"),
        (WorkerLostError("killed"), False, "task-failed"),
        (TimeLimitExceeded(30), True, "time-limit"),
        (DecodeError("bad json"), True, "undecodable-body"),
        (ContentDisallowed("pickle"), True, "content-type-not-allowed"),
    ],
)
def test_failures_are_classified_for_the_dead_letter_queue(exc, final, reason):
    assert is_final(exc) is final
    assert reason_for(exc) == reason


def test_a_delayed_retry_reports_the_route_it_was_published_on():
    delayed = {"exchange": "celery_delayed_delivery", "routing_key": "0." * 28 + "notifier.tasks"}
    assert original_route("notifier", delayed) == ("notifier", "notifier.tasks")
    direct = {"exchange": "events", "routing_key": "user.signed_up"}
    assert original_route("notifier", direct) == ("events", "user.signed_up")
