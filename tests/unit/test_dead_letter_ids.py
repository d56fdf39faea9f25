"""Which id a dead letter is replayed by: the ``id`` header, else (a CloudEvent or plain
envelope an upstream sent, dead-lettered as it was sent) the event id a worker reads it
as; a message no worker reads has none (replaying it would only dead-letter it again)."""

import json

import amqp
import pytest

from shared.core.topology import SERVICES
from shared.ops.dlq import DeadLetter
from shared.ops.moving import copy_of
from shared.ops.replay import _replay_copy

NOTIFIER = SERVICES["notifier"]
EVENT = {"id": "ev-1", "type": "user.signed_up", "source": "crm", "version": 1,
         "payload": {"user_id": "u", "email": "a@example.com", "name": "A"}}  # fmt: skip
STRUCTURED = {"specversion": "1.0", "id": "ev-1", "type": "user.signed_up", "source": "crm",
              "data": EVENT["payload"]}  # fmt: skip
BINARY = {"cloudEvents_specversion": "1.0", "cloudEvents_id": "ev-1",
          "cloudEvents_type": "user.signed_up", "cloudEvents_source": "crm"}  # fmt: skip
DEAD = {"x-dead-letter-reason": "task-failed", "x-original-queue": "notifier.events"}


def letter(body: object, headers: dict, content_type: str, **props) -> DeadLetter:
    message = amqp.Message(json.dumps(body).encode(), content_type=content_type,
                           application_headers={**headers, **DEAD}, **props)  # fmt: skip
    return DeadLetter.read(message, NOTIFIER)


@pytest.mark.parametrize(
    ("body", "headers", "content_type"),
    [
        (STRUCTURED, {}, "application/cloudevents+json"),
        (EVENT["payload"], BINARY, "application/json"),
        (EVENT, {}, "application/json"),
    ],
    ids=["structured", "binary", "plain-envelope"],
)
def test_an_upstream_event_is_replayed_by_its_event_id_and_type(body, headers, content_type):
    dead = letter(body, headers, content_type)
    assert (dead.task_id, dead.task) == ("ev-1", "user.signed_up")


def test_a_message_no_worker_reads_has_no_id_to_replay_it_by():
    broken = {**STRUCTURED, "specversion": "0.3"}
    assert letter(broken, {}, "application/cloudevents+json", message_id="m-1").task_id == ""


def test_a_replayed_copy_keeps_the_message_id_a_new_death_is_found_by():
    dead = letter(STRUCTURED, {}, "application/cloudevents+json", message_id="m-1")
    assert _replay_copy(dead, "operator").properties["message_id"] == "m-1"


def test_an_id_header_wins_and_a_bad_one_is_not_replaced():
    framed = [[], {"event": EVENT}, {}]
    celery = {"task": "user.signed_up", "id": "task-1"}
    assert letter(framed, celery, "application/json").task_id == "task-1"
    assert letter(framed, {**celery, "id": 7}, "application/json").task_id == ""


def test_a_moved_message_is_the_same_but_for_the_user_id_the_broker_would_refuse():
    sent = amqp.Message(
        b"\xfe\xff", content_type="text/plain", content_encoding="utf-16", message_id="m-1",
        user_id="signup", application_headers={"a": 1},
    )  # fmt: skip
    moved = copy_of(sent)
    assert (moved.body, moved.headers) == (b"\xfe\xff", {"a": 1, "x-user-id": "signup"})
    assert {k: v for k, v in moved.properties.items() if k != "application_headers"} == {
        "content_type": "text/plain", "content_encoding": "utf-16", "message_id": "m-1"
    }  # fmt: skip


FORGED = {"x-original-user-id": "notifier", "x-original-exchange": "notifier",
          "x-original-routing-key": "notifier.tasks"}  # fmt: skip
WORK_QUEUES = frozenset(q.name for q in NOTIFIER.work_queues())


def test_a_replay_is_judged_as_the_workers_record_of_who_sent_it():
    dead = letter(EVENT, {"task": "user.signed_up", "id": "ev-1", **FORGED}, "application/json")
    headers = _replay_copy(dead, "operator", WORK_QUEUES).headers
    assert {k: headers[k] for k in FORGED} == FORGED  # the worker writes these in its copy


def test_a_copy_rabbitmq_made_is_judged_by_what_the_broker_recorded_not_by_its_headers():
    """An upstream's message with a forged record, expired in notifier.events: the newest
    ``x-death`` names the work queue, so the record is the sender's own words."""
    death = {"queue": "notifier.events", "reason": "expired", "exchange": "events",
             "routing-keys": ["user.signed_up"], "count": 1}  # fmt: skip
    headers = {"task": "notifier.send_email", "id": "t-1", **FORGED, "x-death": [death]}
    dead = letter([[], {}, {}], headers, "application/json", user_id="t1_crm")
    replayed = _replay_copy(dead, "operator", WORK_QUEUES).headers
    assert {k: replayed[k] for k in FORGED} == {"x-original-user-id": "t1_crm",
        "x-original-exchange": "events", "x-original-routing-key": "user.signed_up"}  # fmt: skip
