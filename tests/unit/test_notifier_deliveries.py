"""Delivery keys: every copy of an event or command maps to one delivery and one message id."""

import uuid
from types import SimpleNamespace

from celery.exceptions import SoftTimeLimitExceeded

from contracts import UserSignedUp
from services.notifier.deliveries import Delivery, status_after
from services.notifier.errors import PermanentDeliveryError


def task(task_id: str) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(id=task_id))


def test_copies_of_an_event_map_to_one_delivery_per_kind_with_stable_ids():
    event = UserSignedUp(
        source="x", payload={"user_id": uuid.uuid4(), "email": "a@example.com", "name": "A"}
    )
    copy = UserSignedUp.model_validate(event.model_dump(mode="json"))
    first = Delivery.for_event(event, "welcome_email", "email", ["a@example.com"], task("t1"))
    again = Delivery.for_event(copy, "welcome_email", "email", ["a@example.com"], task("t1"))
    other = Delivery.for_event(event, "admin_signup_notice", "email", ["b@example.com"], task("t2"))
    assert first.key == again.key == f"{event.id}/welcome_email"
    assert first.message_id == again.message_id != other.message_id
    assert first.event_id("sent") == again.event_id("sent") != first.event_id("failed")
    assert first.payload()["caused_by"] == event.id


def test_a_command_delivery_is_keyed_by_its_task_id():
    a = Delivery.for_command("sms", "sms", ["+821012345678"], task("cmd-1"))
    assert a.key == "cmd-1/sms" and a.caused_by is None
    assert Delivery.for_command("sms", "sms", ["+821012345678"], task("cmd-2")).key != a.key


def test_an_interrupted_send_is_marked_so_and_any_unsent_status_is_sent_again_on_retry():
    assert status_after(SoftTimeLimitExceeded()) == "interrupted"
    assert status_after(PermanentDeliveryError("550")) == "failed"
    assert status_after(ConnectionRefusedError()) == "retrying"
