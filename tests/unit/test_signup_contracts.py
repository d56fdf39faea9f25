"""What the signup service accepts and emits, checked without a broker or a database."""

import pytest
from pydantic import ValidationError

from contracts import NotificationSent, UserStats
from infra.tcp_proxy import TcpProxy
from services.signup.schemas import SignupRequest
from shared.service.declaration import Service
from shared.service.outbox import Outbox


def test_a_signup_request_strips_names_and_refuses_unknown_fields_and_bad_phones():
    ok = SignupRequest(email="ada@example.com", name="  Ada ", phone="+821012345678")
    assert ok.name == "Ada"
    for bad in ({"phone": "12"}, {"phone": "+82 10 1234"}, {"nickname": "A"}, {"name": ""}):
        with pytest.raises(ValidationError):
            SignupRequest(**{"email": "ada@example.com", "name": "Ada", "phone": "+8210", **bad})


def test_user_stats_is_routed_to_signup_and_bounds_its_window():
    assert UserStats.task == "signup.user_stats"
    assert UserStats().days == 7
    for days in (0, 367):
        with pytest.raises(ValidationError):
            UserStats(days=days)


def test_the_outbox_refuses_an_event_its_service_does_not_publish():
    outbox = Outbox(Service("signup"))
    event = NotificationSent(
        source="signup",
        payload={"delivery_id": "d", "kind": "k", "channel": "email", "recipient": "a@b.c"},
    )
    with pytest.raises(ValueError, match="signup may not publish 'notification.sent'"):
        outbox.add(None, event)


def test_the_proxy_rewrites_a_url_to_itself_keeping_credentials_and_vhost():
    proxy = TcpProxy.to("amqp://guest:pw@127.0.0.1:5672/test-1;amqp://other:5673//")
    try:
        assert proxy.target == ("127.0.0.1", 5672)
        assert proxy.url("amqp://guest:pw@127.0.0.1:5672/test-1") == (
            f"amqp://guest:pw@127.0.0.1:{proxy.port}/test-1"
        )
    finally:
        proxy.stop()
