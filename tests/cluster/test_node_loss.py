"""On a 3-node cluster, killing the node that leads notifier's queue loses nothing.

Signups go through the outbox: those whose publish fails while the queue elects a new
leader stay in ``signup.outbox`` until the relay (its own process) publishes them."""

import json
import subprocess
import sys
import uuid

from shared.ops.management import Management
from tests.cluster.conftest import rotated
from tests.support import publish_raw, wait_for

SIGNUPS = 60
KILL_AFTER = 20
BAD_MESSAGES = 5


def node_index(node: str) -> int:
    return int(node.split("@")[0].removeprefix("c"))


def running_nodes(management: Management) -> list[str]:
    return sorted(n["name"] for n in management.request("GET", "/nodes") if n.get("running"))


def test_killing_the_leader_of_notifiers_queue_loses_nothing_and_sends_each_email_once(stack):
    from services.signup.app import service
    from services.signup.signup import sign_up

    management = Management(stack.management_url)
    leader = management.queue(stack.vhost, "notifier.tasks")["leader"]
    assert len(management.queue(stack.vhost, "notifier.tasks")["members"]) == 3

    workers = [
        stack.worker("notifier", AMQP_URL=rotated(stack.amqp_url, 0)),
        stack.worker("notifier", AMQP_URL=rotated(stack.amqp_url, 1)),
        stack.worker("reports", AMQP_URL=rotated(stack.amqp_url, 2)),
    ]
    relay = None
    killed = node_index(leader)
    emails = [f"c{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(SIGNUPS)]
    try:  # each started process is stopped, whichever start fails
        for worker in workers:
            worker.start()
        relay = subprocess.Popen(
            [sys.executable, "-m", "shared.ops", "outbox", "relay", "signup"],
            env={**stack.env, "AMQP_URL": rotated(stack.amqp_url, 1)},
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        pids = [w.proc.pid for w in workers]
        for i in range(BAD_MESSAGES):
            publish_raw(
                stack.amqp_url.split(";")[killed % 3], "", "notifier.events", b"{not json",
                content_type="application/json", application_headers={"task": "user.signed_up",
                                                                       "id": f"bad-{i}"},
            )  # fmt: skip
        for i, email in enumerate(emails):
            if i == KILL_AFTER:
                subprocess.run(["bash", "infra/cluster.sh", "kill", str(killed)], check=True)
            sign_up(service, email=email, name=f"Cluster {i}")

        wait_for(lambda: all(stack.smtp.to(e) for e in emails), timeout=180, interval=1)
        assert [len(stack.smtp.to(e)) for e in emails] == [1] * SIGNUPS
        assert [w.proc.poll() for w in workers] == [None] * 3, "workers must reconnect, not exit"
        assert [w.proc.pid for w in workers] == pids
        assert relay.poll() is None, "the outbox relay must reconnect, not exit"
        for worker in workers[:2]:  # two workers on different nodes share notifier's queue
            assert "notifier.send_welcome_email" in worker.output()
    finally:
        subprocess.run(["bash", "infra/cluster.sh", "start", str(killed)], check=True)
        if relay is not None:
            relay.terminate()
            relay.wait(30)
        for worker in workers:
            worker.stop()

    wait_for(lambda: len(running_nodes(management)) == 3, timeout=60)
    dead_letters = stack.dead_letters("notifier")
    expected = [f"bad-{i}" for i in range(BAD_MESSAGES)]
    assert sorted(m.headers["id"] for m in dead_letters) == expected
    assert {m.headers["x-dead-letter-reason"] for m in dead_letters} == {"undecodable-body"}
    counted = json.dumps(management.queue(stack.vhost, "notifier.tasks")["members"])
    assert f"c{killed}@localhost" in counted


def test_delayed_retries_run_through_the_replicated_delay_queues(stack, clean_queues):
    from services.signup.app import service
    from services.signup.signup import sign_up

    management = Management(stack.management_url)
    delay_queue = management.queue(stack.vhost, "celery_delayed_0")
    assert delay_queue["type"] == "quorum" and len(delay_queue["members"]) == 3

    # Every send is refused; no admins, so only the welcome e-mail is tried (and dies).
    worker = stack.worker("notifier", SMTP_PORT="9", ADMIN_EMAILS="").start()
    try:
        sign_up(service, email=f"retry-{uuid.uuid4().hex[:6]}@example.com", name="Rita")
        dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=90)
    finally:
        worker.stop()
    assert [m.headers["x-attempts"] for m in dead] == [6]  # the first try and 5 delayed retries
    assert dead[0].headers["x-exception-type"] == "ConnectionRefusedError"
