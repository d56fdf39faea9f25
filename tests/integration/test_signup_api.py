"""The signup API's promises: clear errors that save nothing, and user.signed_up delivered
once through the outbox, whether or not RabbitMQ answers when the user signs up."""

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from kombu import Connection
from sqlalchemy import text

from infra.processes import ROOT
from tests.signup_fixtures import AUTH
from tests.support import drain, wait_for


@contextmanager
def tap(amqp_url: str, routing_key: str) -> Iterator[Callable[[], list[str]]]:
    """A private queue bound to ``events``: the event ids published with ``routing_key``."""
    name = f"test-tap-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.queue_declare(name, durable=True, auto_delete=False)
        channel.queue_bind(name, "events", routing_key)

        def published() -> list[str]:
            seen.extend(m.headers["id"] for m in drain(amqp_url, name))
            return seen

        try:
            yield published
        finally:
            channel.queue_delete(name)


@contextmanager
def relays(stack, count: int, amqp_url: str, *args: str) -> Iterator[list[subprocess.Popen]]:
    """``count`` outbox relay processes (``python -m shared.ops outbox relay signup``)."""
    procs = []
    cmd = [
        sys.executable,
        "-m",
        "shared.ops",
        "outbox",
        "relay",
        "signup",
        "--interval",
        "0.2",
        *args,
    ]
    env = {**stack.env, "AMQP_URL": amqp_url}
    try:  # each one started is stopped, whichever start fails
        for i in range(count):
            with open(stack.log_dir / f"relay-{uuid.uuid4().hex[:6]}-{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def scalar(db, sql: str, **params):
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


PAYLOAD = "body->'payload'"


def saved(db, email: str) -> tuple[int, int]:
    """(users, outbox rows) recorded for ``email``."""
    return (
        scalar(db, "SELECT count(*) FROM signup.users WHERE email = :e", e=email),
        scalar(db, f"SELECT count(*) FROM signup.outbox WHERE {PAYLOAD}->>'email' = :e", e=email),
    )


def event_of(db, user_id: str) -> str:
    """The id of the outbox event announcing ``user_id``."""
    sql = f"SELECT id::text FROM signup.outbox WHERE {PAYLOAD}->>'user_id' = :u"
    return scalar(db, sql, u=user_id)


def published_at(db, event_id: str):
    return scalar(db, "SELECT published_at FROM signup.outbox WHERE id = :i", i=event_id)


def new_user(**fields) -> dict:
    tag = uuid.uuid4().hex[:8]
    return {"email": f"ada-{tag}@example.com", "name": "Ada", "phone": "+821012345678", **fields}


def test_a_signup_saves_the_user_texts_a_code_and_publishes_user_signed_up_once(
    stack, api, gateway, db
):
    client = api()
    user = new_user(phone=f"+8210{uuid.uuid4().int % 10**8:08d}")
    with tap(stack.amqp_url, "user.signed_up") as published:
        response = client.post("/users/signup", json=user)
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        event_id = event_of(db, user_id)
        wait_for(lambda: published() == [event_id], timeout=10)
        time.sleep(0.5)
        assert published() == [event_id]

    assert response.headers["location"] == f"/users/{user_id}"
    assert client.get(f"/users/{user_id}", headers=AUTH).json() == response.json()
    assert response.json()["email"] == user["email"]
    [sms] = gateway.to(user["phone"])
    assert sms["text"].startswith("Your verification code is ")
    # The relay marks the row in its own commit after the broker's confirm: soon, not at once.
    wait_for(lambda: published_at(db, event_id) is not None, timeout=10)


def test_signups_keep_one_connection_to_the_sms_gateway(api, gateway):
    """Texts reuse a kept-alive connection: a TCP connection (and a gateway thread) per
    text was a third of a signup's time."""
    client = api()
    before = gateway.connections
    for _ in range(5):
        response = client.post("/users/signup", json=new_user())
        assert response.status_code == 201, response.text
    assert gateway.connections - before == 1


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"email": "not-an-email"}, "email"),
        ({"name": ""}, "name"),
        ({"phone": "call me"}, "phone"),
        ({"phone": None}, "phone"),
        ({"admin": True}, "admin"),
    ],
)
def test_invalid_input_is_422_naming_the_field_and_saves_nothing(api, gateway, db, fields, field):
    user = new_user(**fields)
    response = api().post("/users/signup", json=user)
    assert response.status_code == 422
    assert [e["loc"][-1] for e in response.json()["errors"]] == [field]
    assert saved(db, user["email"]) == (0, 0)
    assert gateway.messages == []


def test_a_taken_email_is_409_and_texts_and_announces_nothing_more(api, gateway, db):
    client = api()
    user = new_user()
    assert client.post("/users/signup", json=user).status_code == 201
    again = client.post("/users/signup", json={**user, "name": "Someone else"})
    assert again.status_code == 409
    assert user["email"] in again.json()["detail"]
    assert saved(db, user["email"]) == (1, 1)
    assert len(gateway.to(user["phone"])) == 1


@pytest.mark.parametrize(
    "failure, status, says",
    [
        ("unreachable", 503, "unreachable"),
        ("http-503", 503, "answered HTTP 503"),
        ("slow", 503, "did not answer within 1s"),
        ("http-400", 502, "refused the message"),
    ],
)
def test_an_sms_gateway_failure_is_a_clear_error_and_leaves_no_user_and_no_event(
    api, gateway, db, failure, status, says
):
    if failure == "unreachable":
        client = api(sms_gateway_url="http://127.0.0.1:9")  # discard port: refused
    else:
        client = api()
        gateway.status = {"http-503": 503, "http-400": 400}.get(failure)
        gateway.delay = 1.5 if failure == "slow" else 0.0
    user = new_user()
    response = client.post("/users/signup", json=user)
    assert response.status_code == status
    assert says in response.json()["detail"]
    assert "nothing was saved" in response.json()["detail"]
    assert saved(db, user["email"]) == (0, 0)


def test_an_unknown_user_is_404(api):
    response = api().get(f"/users/{uuid.uuid4()}", headers=AUTH)
    assert response.status_code == 404


@pytest.mark.parametrize("outage", ["cut", "hang"])
def test_a_signup_with_the_broker_unreachable_is_201_at_once_and_delivered_when_it_returns(
    stack, api, proxy, db, outage
):
    through_proxy = proxy.url(stack.amqp_url)
    client = api(amqp_url=through_proxy, broker_timeout=10.0)
    getattr(proxy, outage)()
    with tap(stack.amqp_url, "user.signed_up") as published, relays(stack, 1, through_proxy):
        user = new_user()
        started = time.monotonic()
        response = client.post("/users/signup", json=user)
        took = time.monotonic() - started
        assert response.status_code == 201, response.text
        # far from the broker's timeout, so a loaded machine is not mistaken for a wait
        assert took < 5.0, f"the signup waited {took:.2f}s (the broker timeout is 10s)"
        user_id = response.json()["id"]
        event_id = event_of(db, user_id)

        time.sleep(2)  # after-commit publisher and relay both try, and fail, meanwhile
        assert published() == []
        assert published_at(db, event_id) is None

        proxy.restore()
        wait_for(lambda: published() == [event_id], timeout=20)
        wait_for(lambda: published_at(db, event_id))
        time.sleep(0.5)
        assert published() == [event_id]


def test_two_relays_at_once_publish_each_outbox_row_once_and_stop_cleanly_on_sigterm(stack, db):
    from contracts import UserSignedUp
    from services.signup.app import service
    from shared.service.outbox import Outbox

    rows = 300
    outbox = Outbox(service)
    with tap(stack.amqp_url, "user.signed_up") as published:
        with relays(stack, 2, stack.amqp_url, "--batch", "10") as procs:
            time.sleep(2)  # both relays are up and polling before the rows appear
            events = [
                UserSignedUp(
                    source="signup",
                    payload={"user_id": uuid.uuid4(), "email": f"r{i}@example.com", "name": "R"},
                )
                for i in range(rows)
            ]
            with service.db.transaction() as session:
                for event in events:
                    outbox.add(session, event)
            ids = [str(e.id) for e in events]
            wait_for(
                lambda: scalar(
                    db, "SELECT count(*) FROM signup.outbox WHERE id::text = ANY(:i) AND published_at IS NOT NULL", i=ids  # noqa: E501
                ) == rows,
                timeout=60,
            )  # fmt: skip
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            assert [proc.wait(10) for proc in procs] == [0, 0]
        wait_for(lambda: len(published()) >= rows, timeout=10)
        time.sleep(0.5)
        seen = published()

    assert len(seen) == rows
    assert sorted(seen) == sorted(ids)
    attempts = scalar(db, "SELECT max(attempts) FROM signup.outbox WHERE id::text = ANY(:i)", i=ids)
    assert attempts == 1
