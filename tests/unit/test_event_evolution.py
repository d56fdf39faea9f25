"""Reading an event in the version its handler was written for (``shared.contracts.evolution``)."""

import uuid

import pytest
from celery.exceptions import Reject

from contracts import UserSignedUp, UserSignedUpV2
from shared.contracts.evolution import UnsupportedVersion, contract_of, read_as
from shared.service.handler import Validated, validate

PAYLOAD = {"user_id": str(uuid.uuid4()), "email": "ada@example.com", "name": "Ada"}


def envelope(version: int, **extra: str) -> dict:
    return {"type": "user.signed_up", "version": version, "source": "crm",
            "payload": {**PAYLOAD, **extra}}  # fmt: skip


def test_a_producer_may_add_an_optional_payload_field_without_a_new_version():
    event = UserSignedUp.model_validate(envelope(1, referrer="newsletter"))
    assert "referrer" not in event.payload.model_dump()  # ignored, never stored


def test_the_envelope_stays_strict():
    with pytest.raises(ValueError, match="extra"):
        UserSignedUp.model_validate({**envelope(1), "tenant": "acme"})


def test_a_v1_event_is_upcast_for_a_v2_handler():
    event = read_as(UserSignedUp.model_validate(envelope(1)), UserSignedUpV2)
    assert (event.version, event.payload.locale) == (2, "en")


def test_a_v2_event_is_read_as_v1_by_a_v1_handler():
    event = read_as(UserSignedUpV2.model_validate(envelope(2, locale="de")), UserSignedUp)
    assert event.version == 1 and not hasattr(event.payload, "locale")


def test_the_contract_of_an_event_is_the_one_of_the_version_it_carries():
    assert contract_of("user.signed_up", envelope(2, locale="de")) is UserSignedUpV2
    assert contract_of("user.signed_up", {"version": "2"}) is None  # the envelope explains
    assert contract_of("user.signed_up", {"payload": {}}) is UserSignedUp  # every consumer alike
    with pytest.raises(UnsupportedVersion, match="user.signed_up v3"):
        contract_of("user.signed_up", envelope(3))


def test_an_event_already_in_the_handlers_version_is_handed_over_as_it_is():
    event = UserSignedUp.model_validate(envelope(1))
    assert read_as(event, UserSignedUp) is event


def test_an_inline_handler_takes_the_event_its_entry_task_validated_and_nothing_else():
    event = UserSignedUp.model_validate(envelope(1))
    handed = Validated(event)
    assert validate(UserSignedUp, "event", (), {"event": handed}) is event
    assert handed == event.model_dump(mode="json")  # as a message, the plain JSON form
    # Another contract's model, or a plain dict, is validated as any message is.
    upcast = Validated(read_as(event, UserSignedUpV2))
    assert validate(UserSignedUpV2, "event", (), {"event": upcast}).version == 2
    with pytest.raises(Reject):
        validate(UserSignedUpV2, "event", (), {"event": handed})
