"""shared.service.testing runs a handler in process through contract validation and dependency
injection with fakes: what a team uses to test its handlers' failure paths."""

import uuid

import pytest

from contracts import NotificationPayload, NotificationSent, UserSignedUp, UserSignedUpV2
from shared.core.topology import ServiceTopology
from shared.service.declaration import Service
from shared.service.handler import InvalidMessage
from shared.service.testing import Harness

service = Service(
    ServiceTopology("mail", subscribes=("user.signed_up",), publishes=("notification.sent",))
)


class Refused(Exception):
    pass


@service.handles(UserSignedUp)
def welcome(event: UserSignedUp, mailer, publish) -> str:
    mailer.send(str(event.payload.email))
    publish(
        NotificationSent(
            source="mail",
            payload=NotificationPayload(
                delivery_id=str(event.id), kind="welcome", channel="email",
                recipient=str(event.payload.email), caused_by=event.id,
            ),
        )
    )  # fmt: skip
    return "sent"


class Mailer:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.sent = fail, []

    def send(self, to: str) -> None:
        if self.fail:
            raise Refused(to)
        self.sent.append(to)


def signup() -> UserSignedUp:
    return UserSignedUp(
        source="signup", payload={"user_id": uuid.uuid4(), "email": "a@example.com", "name": "A"}
    )


def test_a_handler_runs_with_its_fakes_and_its_events_are_recorded():
    mailer = Mailer()
    harness = Harness(service, mailer=mailer)
    assert harness.handle_event(signup()) == {"mail.welcome": "sent"}
    assert mailer.sent == ["a@example.com"]
    assert [e.type for e in harness.published] == ["notification.sent"]


def test_an_event_of_another_version_reaches_the_handler_in_its_version():
    mailer = Mailer()
    v2 = UserSignedUpV2(source="signup", payload={**signup().payload.model_dump(), "locale": "de"})
    assert Harness(service, mailer=mailer).handle_event(v2) == {"mail.welcome": "sent"}
    assert mailer.sent == ["a@example.com"]


def test_a_message_that_breaks_its_contract_is_invalid_before_the_handler_runs():
    mailer = Mailer()
    body = signup().model_dump(mode="json")
    body["payload"].pop("email")
    with pytest.raises(InvalidMessage, match="UserSignedUp"):
        Harness(service, mailer=mailer).handle("mail.welcome", event=body)
    assert mailer.sent == []


def test_a_failure_in_a_dependency_reaches_the_test_and_nothing_is_published():
    harness = Harness(service, mailer=Mailer(fail=True))
    with pytest.raises(Refused):
        harness.handle_event(signup())
    assert harness.published == []


def test_a_missing_fake_is_named():
    with pytest.raises(LookupError, match="needs mailer"):
        Harness(service).handle_event(signup())
