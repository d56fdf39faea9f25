"""The notifier's SMS promises, through the real HTTP gateway stub and real workers."""

import json
import re
import uuid

import pytest

from infra.sms_gateway import SmsGateway
from tests.support import bind_probe, drain, send_raw, wait_for


@pytest.fixture(scope="module")
def gateway():
    gateway = SmsGateway().start()
    yield gateway
    gateway.stop()


@pytest.fixture
def worker(clean_queues, gateway):
    """A notifier worker with default settings; a test that needs others starts its own
    instead (two workers would share the queue)."""
    worker = clean_queues.worker("notifier", SMS_GATEWAY_URL=gateway.url).start()
    yield worker
    worker.stop()


@pytest.fixture
def steer(gateway):
    """The gateway answering normally again after each test."""
    yield gateway
    gateway.status, gateway.retry_after = None, None


def number() -> str:
    return f"+8210{uuid.uuid4().int % 10**8:08d}"


def send_sms(stack, to: str, task_id: str | None = None) -> str:
    task_id = task_id or str(uuid.uuid4())
    send_raw(stack.amqp_url, "notifier.send_sms", {"to": to, "text": "Your code is 1234"}, task_id)
    return task_id


def test_an_sms_reaches_the_gateway_once_even_when_the_command_arrives_twice(
    stack, clean_queues, steer, worker
):
    sent_probe = bind_probe(stack.amqp_url, "notification.sent")
    to = number()
    task_id = send_sms(stack, to)
    send_sms(stack, to, task_id=task_id)
    announced = []  # both copies announce notification.sent: then both are done
    wait_for(lambda: announced.extend(drain(stack.amqp_url, sent_probe)) or len(announced) >= 2)

    assert [m["text"] for m in steer.to(to)] == ["Your code is 1234"]
    event = json.loads(announced[0].body)[1]["event"]
    assert event["payload"] == {
        "delivery_id": f"{task_id}/sms", "kind": "sms", "channel": "sms", "recipient": to,
        "caused_by": None, "error": None,
    }  # fmt: skip


def test_a_gateway_that_says_try_later_is_retried_after_its_retry_after(stack, clean_queues, steer):
    steer.status, steer.retry_after = 503, "2"
    # Delays unscaled: the countdown must be the gateway's 2 s, not default_retry_delay (30 s).
    worker = stack.worker("notifier", SMS_GATEWAY_URL=steer.url, RETRY_DELAY_SCALE="1").start()
    try:
        to = number()
        task_id = send_sms(stack, to)
        wait_for(lambda: f"send_sms[{task_id}] retry: Retry in" in worker.output(), timeout=30)
        steer.status = None
        wait_for(lambda: steer.to(to), timeout=30)
    finally:
        worker.stop()

    assert re.search(rf"send_sms\[{task_id}\] retry: Retry in 2s: TryLater", worker.output())
    assert len(steer.to(to)) == 1


def test_a_gateway_4xx_is_permanent_the_sms_goes_to_the_dlq_at_once(
    stack, clean_queues, steer, worker
):
    failed_probe = bind_probe(stack.amqp_url, "notification.failed")
    steer.status = 400
    task_id = send_sms(stack, number())
    dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=30)
    failed = wait_for(lambda: drain(stack.amqp_url, failed_probe), timeout=30)

    headers = dead[0].headers
    assert (headers["id"], headers["x-attempts"]) == (task_id, 1)
    assert headers["x-exception-type"] == "PermanentDeliveryError"
    assert "SMS gateway 400" in headers["x-exception-message"]
    assert json.loads(failed[0].body)[1]["event"]["payload"]["delivery_id"] == f"{task_id}/sms"


def test_a_gateway_5xx_is_retried_with_backoff_until_it_recovers(
    stack, clean_queues, steer, worker
):
    steer.status = 500
    to = number()
    task_id = send_sms(stack, to)
    wait_for(lambda: f"send_sms[{task_id}] retry: Retry in" in worker.output(), timeout=30)
    steer.status = None
    wait_for(lambda: steer.to(to), timeout=30)

    assert re.search(
        rf"send_sms\[{task_id}\] retry: Retry in \d+s: TransientDeliveryError", worker.output()
    )
    assert len(steer.to(to)) == 1
