"""What a load balancer and an orchestrator see: /livez answers while the process does,
/readyz follows the database only (a broker outage is the outbox's to absorb), and 503s
that say when to come back; the API process refuses to start without its token."""

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from infra.processes import ROOT, free_port
from infra.tcp_proxy import TcpProxy
from tests.integration.test_signup_api import new_user
from tests.signup_fixtures import is_problem
from tests.support import wait_for


def answered_within(seconds: float, request: Callable[[], Any]) -> Any:
    """The answer to ``request``, which must come within ``seconds``: a hang fails the test
    instead of blocking the suite (the proxy's teardown releases the stuck request)."""
    answer: list[Any] = []
    threading.Thread(target=lambda: answer.append(request()), daemon=True).start()
    wait_for(lambda: answer, timeout=seconds, interval=0.05)
    return answer[0]


@pytest.fixture
def db_proxy(stack) -> Iterator[TcpProxy]:
    """A loopback proxy to PostgreSQL that the test cuts (the real server stays up)."""
    p = TcpProxy.to(stack.database_url).start()
    yield p
    p.stop()


def test_readyz_stays_ready_with_the_broker_cut(stack, api, proxy):
    client = api(amqp_url=proxy.url(stack.amqp_url))
    proxy.cut()
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"] is True


def test_with_the_database_cut_readyz_and_signups_are_503_with_retry_after_and_livez_is_200(
    stack, api, db_proxy
):
    client = api(database_url=db_proxy.url(stack.database_url))
    assert client.get("/readyz").status_code == 200
    db_proxy.cut()
    assert client.get("/livez").status_code == 200
    for response in (client.get("/readyz"), client.post("/users/signup", json=new_user())):
        problem = is_problem(response, 503)
        assert int(response.headers["retry-after"]) > 0
        assert "database" in problem["detail"]
        assert "Traceback" not in response.text
    db_proxy.restore()
    assert client.get("/readyz").status_code == 200


def test_with_the_database_hung_readyz_answers_503_within_its_timeout_and_recovers(
    stack, api, db_proxy
):
    client = api(database_url=db_proxy.url(stack.database_url), readiness_timeout=1.0)
    assert client.get("/readyz").status_code == 200
    db_proxy.hang()
    for _ in range(3):  # later probes wait on the query in flight, they do not add threads
        is_problem(answered_within(2.0, lambda: client.get("/readyz")), 503)
    assert client.get("/livez").status_code == 200
    db_proxy.restore()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)


def serve(stack, tmp_path, port: int, **env: str) -> subprocess.Popen:
    """``uvicorn services.signup.api:app`` as deployed, configured by environment only."""
    environ = {k: v for k, v in stack.env.items() if k not in ("API_TOKEN", "LOCAL_MODE")}
    cmd = [sys.executable, "-m", "uvicorn", "services.signup.api:app", "--port", str(port)]
    with open(tmp_path / f"api-{port}.log", "wb") as log:
        return subprocess.Popen(
            cmd, cwd=ROOT, env={**environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )


def test_the_api_process_refuses_to_start_without_a_token_outside_local_mode(stack, tmp_path):
    port = free_port()
    api = serve(stack, tmp_path, port)
    try:
        assert wait_for(lambda: api.poll() is not None, timeout=30)
    finally:
        api.kill()
        api.wait(10)
    assert api.returncode != 0
    assert "API_TOKEN is not set" in (tmp_path / f"api-{port}.log").read_text()


def test_a_190_mib_body_is_refused_413_before_the_client_sends_it(stack, tmp_path):
    port = free_port()
    api = serve(stack, tmp_path, port, API_TOKEN="served-token")
    try:
        wait_for(lambda: api.poll() is None and _answers(port), timeout=30)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /users/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (190 * 1024 * 1024)
            )
            answer = sock.recv(4096)  # no body byte was sent: the answer cannot have read it
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"content-type: application/problem+json" in answer.lower()
    finally:
        api.terminate()
        api.wait(10)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
