"""Reading a DLQ with `python -m shared.ops dlq list|show`: pages that hold a bounded part
of the DLQ, the DLQ left whole and in order, reads that never cost a dead letter its
place, correlation and causation ids, and dead CloudEvents replayed once like the rest."""

import json
import subprocess
import sys
import threading
import uuid

import amqp
import pytest
from kombu import Connection

from shared.core.topology import KEEP_DELIVERY_LIMIT, SERVICES, UNROUTED
from shared.ops.dlq import depth
from shared.ops.management import Management
from shared.ops.moving import BATCH as PASS_BATCH
from tests.integration.test_ops_dlq import NOTIFIER, db, put_dead_email, run_ops  # noqa: F401
from tests.support import drain, envelope, publish_raw, wait_for


def put_many(amqp_url: str, count: int) -> list[str]:
    """``count`` dead `notifier.send_email` messages in the DLQ, in order: their task ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.confirm_select()
        for task_id in ids:
            message = amqp.Message(
                b"[[], {}, {}]", delivery_mode=2, content_type="application/json",
                application_headers={"task": "notifier.send_email", "id": task_id,
                                     "x-dead-letter-reason": "task-failed",
                                     "x-original-queue": "notifier.tasks"},
            )  # fmt: skip
            channel.basic_publish_confirm(message, exchange=NOTIFIER.dlx, routing_key="")
    wait_for(lambda: depth(amqp_url, NOTIFIER) == count)
    return ids


class ReadyWatch(threading.Thread):
    """Polls the DLQ's ready count (a passive declare) until stopped: its lowest value."""

    def __init__(self, amqp_url: str) -> None:
        super().__init__(daemon=True)
        self.amqp_url, self.lowest, self.polls = amqp_url, None, 0
        self.done = threading.Event()

    def run(self) -> None:
        with Connection(self.amqp_url) as conn:
            channel = conn.channel()
            while not self.done.is_set():
                ready = channel.queue_declare(NOTIFIER.dlq, passive=True).message_count
                self.lowest = ready if self.lowest is None else min(self.lowest, ready)
                self.polls += 1

    def stop(self) -> int:
        self.done.set()
        self.join(10)
        return self.lowest


def test_a_listing_shows_one_page_holding_at_most_a_batch_and_leaves_the_dlq_whole_in_order(
    stack, clean_queues
):
    count = 12 * PASS_BATCH
    ids = put_many(stack.amqp_url, count)
    watch = ReadyWatch(stack.amqp_url)
    watch.start()
    wait_for(lambda: watch.polls > 0)
    try:
        listed = run_ops(stack.env, "dlq", "list", "notifier", "--offset", "100", "--limit", "20")
    finally:
        lowest = watch.stop()

    assert listed.returncode == 0, listed.stderr
    lines = [line.split()[0] for line in listed.stdout.splitlines()[1:-1]]
    assert lines == ids[100:120]
    assert listed.stdout.splitlines()[0] == f"notifier.dlq: {count} dead letter(s), showing 101-120"
    assert listed.stdout.splitlines()[-1] == "next page: --offset 120 --limit 20"
    # Never more than a batch out of the queue, and the watch saw the pass (not just before).
    assert count - PASS_BATCH <= lowest < count, lowest
    assert [m.headers["id"] for m in drain(stack.amqp_url, NOTIFIER.dlq)] == ids


def test_a_listing_by_id_finds_a_dead_letter_anywhere_in_the_dlq(stack, clean_queues):
    ids = put_many(stack.amqp_url, 3 * PASS_BATCH)
    wanted = ids[-2]
    shown = run_ops(stack.env, "dlq", "show", "notifier", "--id", wanted, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [d["task_id"] for d in json.loads(shown.stdout)] == [wanted]
    assert [m.headers["id"] for m in drain(stack.amqp_url, NOTIFIER.dlq)] == ids


def test_listings_show_correlation_and_causation_ids(stack, clean_queues):
    traced, plain = str(uuid.uuid4()), str(uuid.uuid4())
    correlation, causation = str(uuid.uuid4()), str(uuid.uuid4())
    put_dead_email(stack.amqp_url, traced, "traced@example.com",
                   **{"x-correlation-id": correlation, "x-causation-id": causation})  # fmt: skip
    put_dead_email(stack.amqp_url, plain, "plain@example.com")
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 2)

    text = run_ops(stack.env, "dlq", "list", "notifier")
    assert text.returncode == 0, text.stderr
    line = {row.split()[0]: row for row in text.stdout.splitlines()[1:]}
    assert f"correlation={correlation}  causation={causation}" in line[traced]
    assert "correlation=-  causation=-" in line[plain]
    listed = json.loads(run_ops(stack.env, "dlq", "list", "notifier", "--json").stdout)
    ids = {d["task_id"]: (d["correlation_id"], d["causation_id"]) for d in listed}
    assert ids == {traced: (correlation, causation), plain: (None, None)}


def test_reading_a_dead_letter_again_and_again_never_drops_it(stack, clean_queues):
    """RabbitMQ 4.x gives a quorum queue without a delivery limit one of 20, and counts each
    requeued read; 3.x takes 4.x's "unlimited" (-1) as 0. So the queues that keep messages
    for an operator declare a limit no reader reaches, the same on every version."""
    management = Management(stack.management_url)
    for name in (UNROUTED, *(t.dlq for t in SERVICES.values())):
        arguments = management.queue(stack.vhost, name)["arguments"]
        assert arguments["x-delivery-limit"] == KEEP_DELIVERY_LIMIT, name
    task_id = str(uuid.uuid4())
    put_dead_email(stack.amqp_url, task_id, "reread@example.com")
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)

    with Connection(stack.amqp_url) as conn:  # a reader that gives each read back: 4.x's 20, +5
        channel = conn.channel()
        for _ in range(25):
            message = channel.basic_get(NOTIFIER.dlq, no_ack=False)
            assert message is not None and message.headers["id"] == task_id
            channel.basic_reject(message.delivery_tag, requeue=True)
    for _ in range(3):  # the management UI's "Get messages", and the CLI
        got = management.request(
            "POST", f"/queues/{management.q(stack.vhost)}/{NOTIFIER.dlq}/get",
            json={"count": 1, "ackmode": "reject_requeue_true", "encoding": "auto"},
        )  # fmt: skip
        assert got[0]["properties"]["headers"]["id"] == task_id
        assert task_id in run_ops(stack.env, "dlq", "show", "notifier").stdout

    assert [m.headers["id"] for m in drain(stack.amqp_url, NOTIFIER.dlq)] == [task_id]


@pytest.mark.usefixtures("db")  # the ops schema, migrated
def test_a_dead_cloudevent_is_replayed_once_by_its_event_id(stack, clean_queues):
    """A structured-mode CloudEvent (no ``id`` header) whose deliveries kept failing: the
    broker dead-letters it past the events queue's delivery limit, as it was sent. The
    replay runs it under its event id, once, however many copies of it turn up."""
    event = envelope(f"ce-{uuid.uuid4().hex[:6]}@example.com")
    body = json.dumps({
        "specversion": "1.0", "id": event["id"], "type": event["type"],
        "source": event["source"], "time": event["occurred_at"], "dataversion": 1,
        "datacontenttype": "application/json", "data": event["payload"],
    }).encode()  # fmt: skip
    publish_raw(stack.amqp_url, "events", "user.signed_up", body,
                content_type="application/cloudevents+json", content_encoding="utf-8")  # fmt: skip
    with Connection(stack.amqp_url) as conn:  # every delivery fails, as a crashing worker's
        channel = conn.channel()
        while depth(stack.amqp_url, NOTIFIER) == 0:
            message = channel.basic_get(NOTIFIER.events_queue, no_ack=False)
            if message is not None:
                channel.basic_reject(message.delivery_tag, requeue=True)
    stack.purge("reports.events")
    (dead,) = drain(stack.amqp_url, NOTIFIER.dlq)
    assert "id" not in dead.headers and dead.headers["x-death"][0]["reason"] == "delivery_limit"
    copy = {"content_type": dead.content_type, "content_encoding": dead.content_encoding,
            "application_headers": dead.headers}  # fmt: skip
    publish_raw(stack.amqp_url, NOTIFIER.dlx, "", dead.body, **copy)
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)

    listed = run_ops(stack.env, "dlq", "list", "notifier")
    assert f"{event['id']}  user.signed_up" in listed.stdout, listed.stdout
    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        replayed = run_ops(stack.env, "dlq", "replay", "notifier")
        assert f"replayed: {event['id']} user.signed_up -> notifier.events" in replayed.stdout, (
            replayed.stdout + replayed.stderr
        )
        wait_for(lambda: stack.smtp.to(event["payload"]["email"]), timeout=30)

        publish_raw(stack.amqp_url, NOTIFIER.dlx, "", dead.body, **copy)  # it turns up again
        wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == 1)
        again = run_ops(stack.env, "dlq", "replay", "notifier")
        assert f"skipped: this dead letter was replayed before: {event['id']}" in again.stdout
    finally:
        worker.stop()
    assert len(stack.smtp.to(event["payload"]["email"])) == 1


@pytest.mark.usefixtures("db")  # the ops schema, migrated
def test_a_replay_leaves_the_dead_letters_it_skips_in_their_order(stack, clean_queues):
    """It holds every dead letter while it works; those it does not replay go back to the
    tail in order, not returned by closing the channel (which shuffles 33 or more)."""
    skipped = [str(uuid.uuid4()) for _ in range(40)]
    for n, task_id in enumerate(skipped):  # no worker can run a task by these ids
        put_dead_email(stack.amqp_url, str(uuid.uuid4()), "skip@example.com", id={"n": n},
                       **{"x-marker": task_id})  # fmt: skip
    good = str(uuid.uuid4())
    put_dead_email(stack.amqp_url, good, "fine@example.com")
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == len(skipped) + 1)

    replayed = run_ops(stack.env, "dlq", "replay", "notifier")

    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed: {good}" in replayed.stdout
    assert [m.headers["x-marker"] for m in drain(stack.amqp_url, NOTIFIER.dlq)] == skipped


def test_a_listing_killed_mid_pass_keeps_every_dead_letter_once_and_reorders_only_its_batch(
    stack, clean_queues
):
    """What ``shared.ops.moving`` says a kill does: every message stays, once; the DLQ starts
    where the pass stopped (the moved ones at its tail); only the batch the listing held
    (at most ``BATCH``) goes back to the head, in the broker's order."""
    count = 20 * PASS_BATCH
    ids = put_many(stack.amqp_url, count)
    listing = subprocess.Popen(
        [sys.executable, "-m", "shared.ops", "dlq", "list", "notifier", "--limit", "1"],
        env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        with Connection(stack.amqp_url) as conn:
            channel = conn.channel()
            ready = lambda: channel.queue_declare(NOTIFIER.dlq, passive=True).message_count  # noqa: E731
            # A batch taken and committed, then the whole next batch taken, not yet committed.
            wait_for(lambda: ready() < count, timeout=60, interval=0.001)
            wait_for(lambda: ready() == count, timeout=60, interval=0.001)
            wait_for(lambda: ready() <= count - PASS_BATCH, timeout=60, interval=0.001)
    finally:
        listing.kill()
        listing.wait(10)
    wait_for(lambda: depth(stack.amqp_url, NOTIFIER) == count)
    position = {task_id: i for i, task_id in enumerate(ids)}
    after = [position[m.headers["id"]] for m in drain(stack.amqp_url, NOTIFIER.dlq)]

    assert sorted(after) == list(range(count))
    # After the held batch, the original order, resumed where the pass stopped, wrapping round.
    held = next(j for j in range(count) if all(
        (b - a) % count == 1 for a, b in zip(after[j:], after[j + 1:], strict=False)
    ))  # fmt: skip
    assert held <= PASS_BATCH
    assert sorted(after[:held]) == sorted((after[held] - held + k) % count for k in range(held))
    assert after != list(range(count)), "the kill landed outside the pass"
