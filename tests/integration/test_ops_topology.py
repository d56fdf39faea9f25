"""`topology apply / plan / export` against a real broker, each test in a vhost of its own."""

import json
import subprocess
import sys
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from infra.scratch import put_scratch_vhost
from shared.ops.management import Management
from tests.service_users import remove_service_identities
from tests.support import wait_for


def run_ops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.ops", *args], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture
def management(stack) -> Management:
    return Management(stack.management_url)


@pytest.fixture
def prefix(stack):
    """Service users and roles are global: these are this test's own, removed after it."""
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    yield prefix
    remove_service_identities(stack, prefix)


def fresh_vhost(stack, management, cleanup: list[str]) -> tuple[str, str]:
    vhost = f"ops-{uuid.uuid4().hex[:8]}"
    put_scratch_vhost(management, vhost)
    cleanup.append(vhost)
    management.grant(vhost, urlsplit(stack.amqp_url.split(";")[0]).username or "guest")
    parts = urlsplit(stack.amqp_url.split(";")[0])
    return vhost, urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


@pytest.fixture
def vhosts(management):
    made: list[str] = []
    yield made
    for vhost in made:
        management.delete_vhost(vhost)


def test_plan_reports_no_drift_after_apply(stack, management, prefix, vhosts):
    vhost, amqp_url = fresh_vhost(stack, management, vhosts)
    env = {**stack.env, "AMQP_URL": amqp_url, "SERVICE_USER_PREFIX": prefix}

    applied = run_ops(env, "topology", "apply")
    assert applied.returncode == 0, applied.stderr
    planned = run_ops(env, "topology", "plan")

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert planned.stdout.strip() == "no drift"


def test_plan_reports_a_changed_queue_argument_a_missing_binding_and_a_policy(
    stack, management, prefix, vhosts
):
    vhost, amqp_url = fresh_vhost(stack, management, vhosts)
    env = {**stack.env, "AMQP_URL": amqp_url, "SERVICE_USER_PREFIX": prefix}
    assert run_ops(env, "topology", "apply").returncode == 0
    v, q = Management.q(vhost), Management.q

    # Someone edits the broker by hand: a queue recreated with another delivery limit, a
    # binding removed, a policy added, an operator policy that would drop dead letters
    # read six times (checked on 3.10.8: the lower of it and the queue's argument holds).
    queue = management.queue(vhost, "notifier.tasks")
    management.request("DELETE", f"/queues/{v}/notifier.tasks")
    arguments = {**queue["arguments"], "x-delivery-limit": 3}
    management.request(
        "PUT", f"/queues/{v}/notifier.tasks", json={"durable": True, "arguments": arguments}
    )
    binding = next(
        b
        for b in management.collection("bindings", vhost)
        if b["source"] == "events" and b["destination"] == "reports.events"
        and b["routing_key"] == "user.signed_up"
    )  # fmt: skip
    management.request(
        "DELETE", f"/bindings/{v}/e/events/q/reports.events/{q(binding['properties_key'])}"
    )
    management.request(
        "PUT",
        f"/policies/{v}/shorter",
        json={"pattern": "^reports\\.", "definition": {"max-length": 5}, "apply-to": "queues"},
    )

    management.request(
        "PUT",
        f"/operator-policies/{v}/reports-cap",
        json={"pattern": "^reports\\.dlq$", "definition": {"delivery-limit": 5},
              "apply-to": "queues"},
    )  # fmt: skip

    planned = run_ops(env, "topology", "plan")

    assert planned.returncode == 1, planned.stderr
    assert "~ queue notifier.tasks: argument x-delivery-limit declared 10, live 3" in planned.stdout
    assert "+ operator policy reports-cap: pattern '^reports\\\\.dlq$'" in planned.stdout
    assert (
        "- binding events -> queue reports.events (routing key 'user.signed_up'): declared,"
        " missing on the broker" in planned.stdout
    )
    assert "+ policy shorter: pattern '^reports\\\\.'" in planned.stdout
    # the recreated queue lost its bindings too, and nothing else is reported
    lines = planned.stdout.splitlines()[:-1]
    assert all("notifier.tasks" in line or "reports" in line for line in lines)

    reapplied = run_ops(env, "topology", "apply")
    assert reapplied.returncode == 2  # a queue argument cannot be changed by redeclaring
    assert "notifier.tasks" in reapplied.stderr and "x-delivery-limit" in reapplied.stderr


def test_exported_definitions_import_into_a_fresh_vhost_with_no_drift(
    stack, management, prefix, vhosts
):
    target = f"ops-import-{uuid.uuid4().hex[:8]}"
    vhosts.append(target)
    env = {**stack.env, "SERVICE_USER_PREFIX": prefix}

    exported = run_ops(env, "topology", "export", "--vhost", target)
    assert exported.returncode == 0, exported.stderr
    management.import_definitions(json.loads(exported.stdout))

    parts = urlsplit(stack.amqp_url.split(";")[0])
    amqp_url = urlunsplit(parts._replace(path="/" + quote(target, safe="")))
    management.grant(target, parts.username or "guest")
    planned = run_ops({**env, "AMQP_URL": amqp_url}, "topology", "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert management.queue(target, "notifier.tasks")["arguments"]["x-delivery-limit"] == 10
    assert management.user(prefix + "notifier") is not None


def test_apply_refuses_the_local_default_passwords_outside_local_mode(
    stack, management, prefix, vhosts
):
    vhost, amqp_url = fresh_vhost(stack, management, vhosts)
    env = {**stack.env, "AMQP_URL": amqp_url, "SERVICE_USER_PREFIX": prefix, "LOCAL_MODE": "0"}
    env = {k: v for k, v in env.items() if not k.startswith("SERVICE_PASSWORDS__")}
    explicit_default = {**env, "SERVICE_PASSWORDS__NOTIFIER": "notifier-local"}

    for refused in (
        run_ops(env, "topology", "apply"),
        run_ops(explicit_default, "topology", "apply"),
    ):
        assert refused.returncode == 2
        assert "local default passwords" in refused.stderr and "notifier" in refused.stderr
    assert management.user(f"{prefix}notifier") is None
    assert management.collection("queues", vhost) == []

    secrets = {
        f"SERVICE_PASSWORDS__{n.upper()}": uuid.uuid4().hex
        for n in ("signup", "notifier", "reports")
    }
    assert run_ops({**env, **secrets}, "topology", "apply").returncode == 0
    assert run_ops({**env, "LOCAL_MODE": "1"}, "topology", "apply").returncode == 0


def test_recreate_gives_a_queue_its_declared_arguments_and_keeps_its_messages_in_order(
    stack, management, prefix, vhosts
):
    """Queues an earlier version declared without ``x-delivery-limit``: RabbitMQ cannot add
    the argument, and the next `topology apply` (or worker) is refused. Each is recreated
    alone, whichever other queue still differs."""
    vhost, amqp_url = fresh_vhost(stack, management, vhosts)
    env = {**stack.env, "AMQP_URL": amqp_url, "SERVICE_USER_PREFIX": prefix}
    assert run_ops(env, "topology", "apply").returncode == 0
    v = Management.q(vhost)
    old = {"durable": True, "arguments": {"x-queue-type": "quorum"}}
    for queue, exchange in (("notifier.dlq", "notifier.dlx"), ("events.unrouted",) * 2):
        management.request("DELETE", f"/queues/{v}/{queue}")
        management.request("PUT", f"/queues/{v}/{queue}", json=old)
        management.request("POST", f"/bindings/{v}/e/{exchange}/q/{queue}", json={})
    bodies = [f"dead letter {i}" for i in range(120)]
    for body in bodies:
        message = {"properties": {"delivery_mode": 2, "headers": {"n": body}},
                   "routing_key": "", "payload": body, "payload_encoding": "string"}  # fmt: skip
        management.request("POST", f"/exchanges/{v}/notifier.dlx/publish", json=message)
    assert "argument x-delivery-limit declared" in run_ops(env, "topology", "plan").stdout
    assert run_ops(env, "topology", "apply").returncode == 2

    recreated = run_ops(env, "topology", "recreate", "notifier.dlq")

    assert recreated.returncode == 0, recreated.stdout + recreated.stderr
    assert "notifier.dlq: recreated as declared, 120 message(s) kept" in recreated.stdout
    assert "events.unrouted: argument x-delivery-limit" in run_ops(env, "topology", "plan").stdout
    assert run_ops(env, "topology", "recreate", "events.unrouted").returncode == 0
    planned = run_ops(env, "topology", "plan")
    assert planned.stdout.strip() == "no drift", planned.stdout
    taken = management.request(
        "POST", f"/queues/{v}/notifier.dlq/get",
        json={"count": 200, "ackmode": "ack_requeue_false", "encoding": "auto"},
    )  # fmt: skip
    assert [m["payload"] for m in taken] == bodies
    assert [m["properties"]["headers"]["n"] for m in taken] == bodies


def test_recreate_refuses_while_a_worker_dead_letters_into_the_queue_and_nothing_is_lost(
    stack, management, prefix, vhosts
):
    """Between the deletion of a DLQ and its declaration, a dead letter a worker publishes to
    the service's DLX is unroutable yet confirmed, and its original acked: lost. So the
    command refuses while anything but itself is connected to the vhost, before it touches
    a queue; once the system is stopped it runs, and every dead letter is there."""
    import amqp
    from kombu import Connection

    vhost, amqp_url = fresh_vhost(stack, management, vhosts)
    env = {**stack.env, "AMQP_URL": amqp_url, "SERVICE_USER_PREFIX": prefix}
    assert run_ops(env, "topology", "apply").returncode == 0
    worker = stack.worker("notifier", AMQP_URL=amqp_url).start()
    try:
        # An older version's DLQ (no x-delivery-limit) under a running worker.
        v = Management.q(vhost)
        management.request("DELETE", f"/queues/{v}/notifier.dlq")
        management.request(
            "PUT",
            f"/queues/{v}/notifier.dlq",
            json={"durable": True, "arguments": {"x-queue-type": "quorum"}},
        )
        management.request("POST", f"/bindings/{v}/e/notifier.dlx/q/notifier.dlq", json={})
        sent = 100  # messages no task can run: the worker dead-letters each
        with Connection(amqp_url) as conn:  # confirmed: each one the broker has taken
            channel = conn.channel()
            channel.confirm_select()
            for i in range(sent):
                channel.basic_publish_confirm(
                    amqp.Message(b"[[], {}, {}]", content_type="application/json",
                                 application_headers={"task": "notifier.nope", "id": f"n{i}"}),
                    exchange="notifier", routing_key="notifier.tasks",
                )  # fmt: skip

        refused = run_ops(env, "topology", "recreate", "notifier.dlq")

        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "workers consume notifier.tasks, notifier.events" in refused.stderr
        assert "stop the system" in refused.stderr
        names = {q["name"] for q in management.queues(vhost)}
        assert "notifier.dlq.recreating" not in names
        dlq = lambda: management.queue(vhost, "notifier.dlq").get("messages")  # noqa: E731
        wait_for(lambda: dlq() == sent, timeout=240)  # ~10/s on a loaded 2-core machine
    finally:
        worker.stop()
    wait_for(lambda: not management.request("GET", f"/vhosts/{Management.q(vhost)}/connections"))

    recreated = run_ops(env, "topology", "recreate", "notifier.dlq")

    assert recreated.returncode == 0, recreated.stdout + recreated.stderr
    assert f"notifier.dlq: recreated as declared, {sent} message(s) kept" in recreated.stdout
