"""The signup API's edge, from an attacker's side: bodies too large to read, characters
PostgreSQL refuses, e-mails that differ only in case, reads without credentials, and
errors that every client can parse (RFC 9457) and find in the OpenAPI document."""

import asyncio
import json
import uuid

import pytest

from tests.integration.test_signup_api import new_user, saved
from tests.signup_fixtures import AUTH, PROBLEM, TOKEN, is_problem


def test_a_body_over_the_limit_is_413_with_a_short_problem_and_saves_nothing(api, db):
    user = new_user(name="A" * 190 * 1024 * 1024)
    response = api().post("/users/signup", json=user)
    problem = is_problem(response, 413)
    assert len(response.content) < 500
    assert "16384 bytes" in problem["detail"]
    assert saved(db, user["email"]) == (0, 0)


def test_a_streamed_body_without_length_is_413_and_read_no_further_than_the_limit(api):
    """Driven as uvicorn drives the app (ASGI messages), counting the chunks it asks for."""
    app = api().app
    head = b'{"email": "a@example.com", "phone": "+821012345678", "name": "'
    chunks = [head] + [b"A" * 4096] * 64 + [b'"}']
    asked, sent = [], []

    async def receive() -> dict:
        asked.append(chunks[len(asked)])
        return {"type": "http.request", "body": asked[-1], "more_body": len(asked) < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/users/signup", "raw_path": b"/users/signup",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": None,
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert dict(sent[0]["headers"])[b"content-type"] == PROBLEM.encode()
    assert sum(map(len, asked)) <= 16384 + 4096, "the API read on past the limit"


def test_a_422_names_the_field_but_never_echoes_the_input(api):
    user = new_user(name="B" * 10_000)
    response = api().post("/users/signup", json=user)
    problem = is_problem(response, 422)
    assert [e["loc"][-1] for e in problem["errors"]] == ["name"]
    assert "BBBB" not in response.text
    assert len(response.content) < 1000


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "\x00"}, "name"),
        ({"name": "Ada\x00Lovelace"}, "name"),
        ({"name": "Ada\x1b[2J"}, "name"),
        ({"name": "Ada\nLovelace"}, "name"),
        ({"name": "Ada\ud800"}, "name"),
        ({"email": "ada\x00@example.com"}, "email"),
    ],
)
def test_control_characters_postgresql_refuses_are_422_not_500(api, gateway, db, fields, field):
    body = json.dumps(new_user(**fields))  # escaped: "\\u0000", "\\ud800" as a client may send
    headers = {"Content-Type": "application/json"}
    response = api().post("/users/signup", content=body, headers=headers)
    problem = is_problem(response, 422)
    assert [e["loc"][-1] for e in problem["errors"]] == [field]
    assert gateway.messages == []


def test_a_body_that_is_not_utf8_json_is_a_400_problem(api):
    headers = {"Content-Type": "application/json"}
    response = api().post("/users/signup", content=b"\x12mS\xff\xfe\x11", headers=headers)
    is_problem(response, 400)


def test_an_email_differing_only_in_case_is_the_same_user_409(api, gateway, db):
    client = api()
    tag = uuid.uuid4().hex[:8]
    first = client.post("/users/signup", json=new_user(email=f"Ada-{tag}@Example.com"))
    assert first.status_code == 201, first.text
    again = client.post("/users/signup", json=new_user(email=f"ada-{tag}@example.COM"))
    is_problem(again, 409)
    assert saved(db, first.json()["email"]) == (1, 1)
    assert len(gateway.messages) == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": TOKEN}])
def test_users_and_tasks_are_401_without_the_token(api, headers):
    client = api()
    created = client.post("/users/signup", json=new_user()).json()
    for path in (f"/users/{created['id']}", f"/tasks/{uuid.uuid4()}"):
        response = client.get(path, headers=headers)
        problem = is_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert created["email"] not in response.text
        assert "phone" not in problem
    assert client.get(f"/users/{created['id']}", headers=AUTH).json() == created


def test_the_api_refuses_to_start_without_a_token_outside_local_mode(api):
    with pytest.raises(RuntimeError, match="API_TOKEN"):
        api(api_token=None, local_mode=False)


def test_local_mode_has_a_default_token(api):
    client = api(api_token=None, local_mode=True)
    local = {"Authorization": "Bearer signup-local"}
    response = client.get(f"/users/{uuid.uuid4()}", headers=local)
    is_problem(response, 404)


def test_every_status_the_api_answers_is_declared_as_a_problem_in_the_openapi_document(api):
    spec = api().get("/openapi.json").json()
    declared = {
        (path, method): set(op["responses"])
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    any_request, db_down = {"413", "500"}, {"503"}  # a body on any route; the database
    assert declared == {
        ("/users/signup", "post"): {"201", "400", "409", "422", "502"} | db_down | any_request,
        ("/users/{user_id}", "get"): {"200", "401", "404", "422"} | db_down | any_request,
        ("/tasks/{task_id}", "get"): {"200", "401", "422"} | db_down | any_request,
        ("/livez", "get"): {"200"} | any_request,
        ("/readyz", "get"): {"200", "503"} | any_request,
    }
    for ops in spec["paths"].values():
        for op in ops.values():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    assert list(answer["content"]) == [PROBLEM], (op["operationId"], status)
            if "503" in op["responses"]:
                assert "Retry-After" in op["responses"]["503"]["headers"]


def test_a_method_the_document_does_not_list_is_405_not_a_lookup_of_user_signup(api):
    response = api().get("/users/signup", headers=AUTH)
    is_problem(response, 405)
    assert response.headers["allow"] == "POST"


def test_an_sms_gateway_outage_is_503_with_retry_after(api, gateway):
    gateway.status = 503
    response = api().post("/users/signup", json=new_user())
    is_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
