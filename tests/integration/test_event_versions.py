"""Events evolve without lockstep deploys: ``user.signed_up`` v2 (adds ``locale``) is
published while a consumer written for v1 (``tests/evolution/legacy.py``) and one written
for v2 (``localized.py``) both run, on the real broker, from raw AMQP publishes."""

import json
import uuid
from uuid import NAMESPACE_URL, uuid5

import pytest
from kombu import Connection

import services
from shared.core.db import migrate
from shared.core.settings import get_settings
from shared.core.topology import declare_service
from tests.support import publish_raw, wait_for

SYSTEM = "tests.evolution"


@pytest.fixture
def consumers(stack, monkeypatch):
    """``legacy`` and ``localized`` declared, migrated and each running a worker."""
    monkeypatch.setenv("EVENTFUL_SYSTEM", SYSTEM)
    get_settings.cache_clear()
    from tests.evolution import legacy, localized

    workers = []
    try:
        for consumer in (legacy, localized):
            migrate(stack.database_url, consumer.service.name)
            with Connection(stack.amqp_url) as conn:
                declare_service(conn.default_channel, consumer.service.topology)
            workers.append(stack.worker(consumer.service.name, EVENTFUL_SYSTEM=SYSTEM))
            workers[-1].start()  # stopped below even if this start fails
        yield legacy.service, localized.service
    finally:
        try:
            for worker in workers:
                worker.stop()
            _remove(stack, legacy.service.topology, localized.service.topology)
        finally:  # whatever failed above, later tests run the real system
            monkeypatch.undo()
            get_settings.cache_clear()


def _remove(stack, *consumers) -> None:
    """Take the consumers off the session's vhost, and the test's events out of the real
    subscribers' queues: later tests see only the real system and their own messages."""
    stack.purge(*(d.topology.events_queue for d in services.SERVICES if d.topology.subscribes))
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        for topo in consumers:
            for queue in (*topo.work_queues(), topo.dead_letter_queue()):
                channel.queue_delete(queue.name)
            for exchange in (topo.name, topo.dlx):
                channel.exchange_delete(exchange)


def signed_up(version: int, **payload_extra: str) -> dict:
    payload = {"user_id": str(uuid.uuid4()), "email": "ada@example.com", "name": "Ada"}
    return {
        "id": str(uuid.uuid4()), "type": "user.signed_up", "version": version,
        "occurred_at": "2026-11-27T09:00:00Z", "source": "crm",
        "payload": {**payload, **payload_extra},
    }  # fmt: skip


def publish(stack, envelope: dict) -> None:
    publish_raw(
        stack.amqp_url, "events", "user.signed_up",
        json.dumps([[], {"event": envelope}, {}]).encode(),
        content_type="application/json", content_encoding="utf-8",
        application_headers={"task": "user.signed_up", "id": envelope["id"]},
    )  # fmt: skip


def seen(service, envelope: dict) -> dict:
    """What ``service``'s handler saw of the event: its result (the dispatched task's id
    is derived from the event id, as the entry task derives it)."""
    task_id = str(uuid5(NAMESPACE_URL, f"{envelope['id']}/{service.name}.greet"))
    return service.celery.AsyncResult(task_id).get(timeout=30)


def test_consumers_on_v1_and_v2_both_handle_v1_and_v2_events_without_a_dead_letter(
    stack, consumers
):
    legacy, localized = consumers
    v1 = signed_up(1, referrer="newsletter")  # an optional field v1 readers do not know
    v2 = signed_up(2, locale="pt-BR")
    publish(stack, v1)
    publish(stack, v2)

    assert seen(legacy, v1) == {"version": 1, "name": "Ada"}
    assert seen(legacy, v2) == {"version": 1, "name": "Ada"}  # read as v1: locale ignored
    assert seen(localized, v1) == {"version": 2, "name": "Ada", "locale": "en"}  # upcast
    assert seen(localized, v2) == {"version": 2, "name": "Ada", "locale": "pt-BR"}
    for service in consumers:
        assert stack.dead_letters(service.name) == []


def test_a_version_no_consumer_knows_is_dead_lettered_as_unsupported_version(stack, consumers):
    v3 = signed_up(3, locale="en", timezone="Europe/Lisbon")
    publish(stack, v3)

    for service in consumers:
        letters = wait_for(lambda s=service: stack.dead_letters(s.name))
        assert len(letters) == 1
        headers = letters[0].headers
        assert headers["x-dead-letter-reason"] == "unsupported-version"
        assert "user.signed_up v3" in headers["x-exception-message"]
        assert json.loads(letters[0].body)[1]["event"]["id"] == v3["id"]
