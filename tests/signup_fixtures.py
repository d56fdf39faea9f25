"""The signup API under test (plugin of tests/conftest.py): the app with its lifespan, the
SMS gateway stub it texts, a proxy that cuts its broker, and the operators' token."""

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from infra.sms_gateway import SmsGateway
from infra.tcp_proxy import TcpProxy

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"


def is_problem(response, status: int) -> dict:
    """The response is an RFC 9457 problem document for ``status``; returns it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["type"]
    return problem


@pytest.fixture
def gateway() -> Iterator[SmsGateway]:
    gw = SmsGateway().start()
    yield gw
    gw.stop()


@pytest.fixture
def proxy(stack) -> Iterator[TcpProxy]:
    """A loopback proxy to the broker that the test cuts (the real broker stays up)."""
    p = TcpProxy.to(stack.amqp_url).start()
    yield p
    p.stop()


@pytest.fixture
def api(stack, gateway) -> Callable[..., TestClient]:
    """Start the API (lifespan included) with settings overridden by keyword."""
    from services.signup.api import create_app
    from services.signup.config import SignupSettings

    clients: list[TestClient] = []

    def start(**settings) -> TestClient:
        options = {"sms_gateway_url": gateway.url, "sms_timeout": 1.0, "api_token": TOKEN}
        options.update(settings)
        client = TestClient(create_app(SignupSettings(**options)))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)
