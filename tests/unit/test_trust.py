"""The trust table's rules and the ranges checked for everyone (the broker side is in
tests/integration/test_trust_table.py and test_trust_boundary.py)."""

import json

import pytest
from celery.app.task import Context
from kombu.message import Message

from shared.worker.trust import HEADERS, REFUSED, asks, kept, refusals
from shared.worker.wire import MalformedMessage, check_body, check_headers, check_protocol

BASE = {"task": "t", "id": "i"}


def test_every_attribute_of_celerys_request_has_a_row():
    """Celery copies every header into its request: a name without a row would be obeyed."""
    names = {n for n in vars(Context) if not n.startswith("__")}
    assert names <= set(HEADERS)
    refused = {n for n in names if HEADERS[n].others == REFUSED}
    assert refused >= {"callbacks", "chain", "chord", "errbacks", "is_eager", "headers"}


def test_what_a_default_celery_caller_sends_asks_for_nothing():
    headers = {"lang": "py", "task": "t", "id": "i", "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": "r", "parent_id": "p", "argsrepr": "()",
               "kwargsrepr": "{}", "origin": "gen1@host", "ignore_result": False,
               "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}  # fmt: skip
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert refusals(headers, embed) == []
    assert all(kept(name) for name in headers)


def test_asking_headers_are_named_and_the_platforms_own_are_dropped():
    headers = {**BASE, "retries": 3, "callbacks": [], "x-outage-waited": 5, "anything": 1}
    assert refusals(headers, {"chain": [{}]}) == ["'retries'", "'callbacks'", "embed 'chain'"]
    assert not kept("x-outage-waited") and not kept("anything") and not asks("anything", 1)


def test_a_replays_own_stamp_is_not_a_request():
    assert not asks("stamps", {"dlq_replay": "x"}) and asks("stamps", {"dlq_replay": 1, "a": 2})
    assert not asks("stamped_headers", ["dlq_replay"]) and asks("stamped_headers", ["a"])


@pytest.mark.parametrize(
    "timelimit", [[-1, -1], [0, None], [None, 0], [1e12, 1e12], [5, 10], [5, 5], [float("nan"), 1]]
)
def test_time_limits_are_positive_bounded_and_soft_below_hard(timelimit):
    with pytest.raises(MalformedMessage) as refused:
        check_headers({**BASE, "timelimit": timelimit}, max_time_limit=1800)
    assert refused.value.reason == "malformed-headers"


def test_time_limits_within_range_pass():
    for timelimit in ([None, None], [30, 20], [30, None], [None, 20], [1800, 1799]):
        check_headers({**BASE, "timelimit": timelimit}, max_time_limit=1800)


@pytest.mark.parametrize(
    "headers",
    [{"group_index": -1}, {"replaced_task_nesting": "3"}, {"stamps": []},
     {"stamped_headers": [1]}, {"stamped_headers": "a"}],
)  # fmt: skip
def test_other_control_headers_have_the_types_celery_assumes(headers):
    with pytest.raises(MalformedMessage):
        check_headers({**BASE, **headers})


def test_an_embed_key_celery_does_not_define_is_malformed_from_anyone():
    with pytest.raises(MalformedMessage, match="hostname"):
        check_body([[], {}, {"hostname": "x", "callbacks": None}])


def _message(body: object, **headers: object) -> Message:
    return Message(json.dumps(body).encode(), content_type="application/json",
                   content_encoding="utf-8", headers=headers)  # fmt: skip


def test_a_message_without_a_task_header_is_never_run():
    with pytest.raises(MalformedMessage) as protocol_1:
        check_protocol(_message({"task": "t", "id": "i", "args": [], "kwargs": {}}))
    assert protocol_1.value.reason == "protocol-1"
    with pytest.raises(MalformedMessage) as headless:
        check_protocol(_message([[], {}, {}]))
    assert headless.value.reason == "no-task-header"
    check_protocol(_message([[], {}, {}], **BASE))
