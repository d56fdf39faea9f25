"""``GET /tasks/{id}`` shows the real lifecycle of a ``signup.user_stats`` command run by a
real signup worker, as other services reach it: through RabbitMQ only."""

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from contracts import UserStats
from services.signup.model import users
from tests.support import wait_for

STATS_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def worker(stack):
    w = stack.worker("signup", USER_STATS_TIMEOUT=str(STATS_TIMEOUT)).start()
    yield w
    w.stop()


@pytest.fixture
def client(stack) -> Iterator[TestClient]:
    from services.signup.api import create_app
    from services.signup.config import SignupSettings

    app = create_app(SignupSettings(api_token="test-token"))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as c:
        yield c


@pytest.fixture
def lock_users(db) -> Iterator[Callable[[], Any]]:
    """Take an exclusive lock on signup.users (a busy database); rolling back releases it."""
    held = []

    def lock():
        conn = db.connect()
        transaction = conn.begin()
        conn.execute(text("LOCK TABLE signup.users IN ACCESS EXCLUSIVE MODE"))
        held.append((conn, transaction))
        return transaction

    yield lock
    for conn, transaction in held:
        if transaction.is_active:
            transaction.rollback()
        conn.close()


def send(client: TestClient, command: UserStats) -> str:
    return client.app.state.runtime.service.send(command)


def status(client: TestClient, task_id: str) -> dict:
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    return response.json()


def seen_states(client: TestClient, task_id: str, until: set[str], timeout: float) -> list[str]:
    """Every distinct status the API reports, polled until one in ``until``."""
    states: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status(client, task_id)["status"]
        if not states or states[-1] != state:
            states.append(state)
        if state in until:
            return states
        time.sleep(0.05)
    raise AssertionError(f"{task_id} never reached {until}: saw {states}")


def test_user_stats_is_started_while_it_runs_then_success_with_the_counts(
    worker, client, db, lock_users
):
    now = datetime.now(UTC)
    with db.begin() as conn:
        for created_at in (now, now, now - timedelta(days=10)):
            email = f"s-{uuid.uuid4().hex[:8]}@example.com"
            row = {"id": uuid.uuid4(), "email": email, "name": "S", "created_at": created_at}
            conn.execute(users.insert().values(**row))
        total = conn.execute(text("SELECT count(*) FROM signup.users")).scalar()
        utc_day = "(created_at AT TIME ZONE 'UTC')::date"
        today = conn.execute(
            text(f"SELECT count(*) FROM signup.users WHERE {utc_day} = :d"), {"d": now.date()}
        ).scalar()

    users_locked = lock_users()
    task_id = send(client, UserStats(days=3))
    assert seen_states(client, task_id, {"STARTED"}, timeout=30)[-1] == "STARTED"
    assert status(client, task_id)["ready"] is False
    users_locked.rollback()

    states = seen_states(client, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert states[-1] == "SUCCESS"
    answer = status(client, task_id)
    assert answer["ready"] is True
    assert answer["result"]["total"] == total
    assert answer["result"]["per_day"][now.date().isoformat()] == today
    assert len(answer["result"]["per_day"]) == 3
    assert sum(answer["result"]["per_day"].values()) < total  # the 10-day-old signup


def test_user_stats_over_its_time_budget_is_failure_with_its_traceback_and_dead_lettered(
    stack, worker, clean_queues, client, lock_users
):
    lock_users()
    task_id = send(client, UserStats(days=7))
    states = seen_states(client, task_id, {"SUCCESS", "FAILURE"}, timeout=30 + STATS_TIMEOUT)
    assert states[0] in {"PENDING", "STARTED"}
    assert "STARTED" in states
    assert states[-1] == "FAILURE"

    answer = status(client, task_id)
    assert answer["result"]["type"] == "StatsTimedOut"
    assert f"cancelled after {STATS_TIMEOUT:g}s" in answer["result"]["message"]
    assert "StatsTimedOut" in answer["traceback"]
    assert "statement timeout" in answer["traceback"]

    dead = wait_for(lambda: stack.dead_letters("signup"), timeout=10)
    assert [m.headers["id"] for m in dead] == [task_id]
    assert dead[0].headers["x-dead-letter-reason"] == "task-failed"
    assert dead[0].headers["x-task"] == "signup.user_stats"


def test_a_task_id_the_backend_never_saw_is_pending(client):
    answer = status(client, "00000000-0000-0000-0000-000000000000")
    assert answer == {
        "task_id": "00000000-0000-0000-0000-000000000000",
        "status": "PENDING",
        "ready": False,
        "result": None,
        "traceback": None,
    }
