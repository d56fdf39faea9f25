"""Each service worker serves Prometheus metrics: task outcomes, dead letters, outbox lag and
the beat lock; the broker's own exporter serves queue depth and consumers, once per broker."""

import json
import re
import socket
import uuid
from pathlib import Path

import httpx

from shared.worker.beat import AdvisoryLock, lock_key
from tests.support import JSON, envelope, framed, free_port, headers, publish_raw, wait_for


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None if it is not there."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return None


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def broker_metrics(stack) -> str:
    """What RabbitMQ's exporter (rabbitmq_prometheus) serves about the test's vhost:
    what `make run`'s Prometheus scrapes."""
    families = "family=queue_coarse_metrics&family=queue_consumer_count"
    url = f"{stack.metrics_url}/metrics/detailed?vhost={stack.vhost}&{families}"
    return httpx.get(url, timeout=5).text


def listen_addresses(port: int) -> set[str]:
    """The IPv4 addresses a TCP socket listens on ``port`` with, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_a_reports_worker_counts_its_tasks_and_shows_queue_and_dlq_depth(
    stack, clean_queues, tmp_path
):
    from services.signup.app import service as signup
    from services.signup.signup import sign_up

    port = free_port()
    worker = stack.worker(
        "reports",
        "-I",
        "shared.ops.metrics",
        METRICS_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    ).start()
    try:
        publish_raw(stack.amqp_url, "reports.dlx", "", b"{}", content_type="application/json")
        bare, invalid = envelope("bare@example.com"), envelope("not-an-address")
        for body, event in ((json.dumps(bare).encode(), bare), (framed(invalid), invalid)):
            publish_raw(stack.amqp_url, "events", "user.signed_up", body,
                        application_headers=headers(event), **JSON)  # fmt: skip
        sign_up(signup, email=f"m-{uuid.uuid4().hex[:6]}@example.com", name="Metrics")

        def scraped() -> str | None:
            text = scrape(port)
            done = sample(
                text, "eventful_tasks_total", service="reports", state="succeeded",
                task="reports.record_signup",
            )  # fmt: skip
            dead = [sample(text, "eventful_dead_letters_total", service="reports", reason=r)
                    for r in ("malformed-body", "rejected")]  # fmt: skip
            return text if done == 1 and dead == [1, 1] else None

        text = wait_for(scraped, timeout=30)
        listening = listen_addresses(port)

        def broker_counted() -> bool:  # the exporter's values lag by up to 5 s (stats interval)
            broker, queue = broker_metrics(stack), {"vhost": stack.vhost}
            dlq = sample(broker, "rabbitmq_detailed_queue_messages", queue="reports.dlq", **queue)
            consumers = sample(
                broker, "rabbitmq_detailed_queue_consumers", queue="reports.events", **queue
            )
            return (dlq, consumers) == (3, 1)

        wait_for(broker_counted, timeout=15)
    finally:
        worker.stop()
    assert listening == {"127.0.0.1"}, "metrics listen on loopback unless told otherwise"
    duration = {"service": "reports", "task": "reports.record_signup"}
    assert sample(text, "eventful_task_duration_seconds_count", **duration) == 1
    assert "eventful_queue" not in text, "queue gauges come from the broker, not each worker"


def test_two_workers_of_a_service_on_one_host_each_serve_their_own_counts(
    stack, clean_queues, tmp_path
):
    """Same METRICS_PORT, same PROMETHEUS_MULTIPROC_DIR: the second takes a free port, says
    so, and registers it for Prometheus; neither serves nor clears the other's counts."""
    port, targets = free_port(), tmp_path / "targets"
    env = {"METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "METRICS_TARGETS_DIR": str(targets)}  # fmt: skip
    workers = [stack.worker("reports", "-I", "shared.ops.metrics", **env) for _ in range(2)]
    try:
        for worker in workers:
            worker.start()
        registered = {json.loads(p.read_text())[0]["targets"][0] for p in targets.glob("*.json")}
        ports = sorted(int(t.rsplit(":", 1)[1]) for t in registered)
        events = [envelope(f"two-{i}@example.com") for i in range(6)]
        for event in events:
            publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                        application_headers=headers(event), **JSON)  # fmt: skip

        def succeeded(p: int) -> float:
            text = scrape(p)
            return sample(text, "eventful_tasks_total", service="reports",
                          task="reports.record_signup", state="succeeded") or 0  # fmt: skip

        wait_for(lambda: sum(succeeded(p) for p in ports) >= len(events), timeout=30)
        total = sum(succeeded(p) for p in ports)
    finally:
        for worker in workers:
            worker.stop()
    assert len(ports) == 2 and port in ports, registered
    other = next(p for p in ports if p != port)
    said = "".join(w.output() for w in workers)
    assert (
        f"metrics: port {port} is in use (another worker on this host?); serving on port {other}"
        in said
    )
    assert total == len(events), "each task counted once, by the worker that ran it"
    assert list(targets.glob("*.json")) == [], "a stopped worker removes its target"


def test_a_worker_shows_whether_anyone_holds_its_services_beat_lock(stack, tmp_path):
    port = free_port()
    worker = stack.worker("reports", "-I", "shared.ops.metrics", METRICS_PORT=str(port)).start()
    lock = AdvisoryLock(stack.database_url, lock_key("reports"))
    try:
        held = lambda: sample(scrape(port), "eventful_beat_lock_held", service="reports")  # noqa: E731
        assert held() == 0
        assert lock.held()  # what a beat does when it takes over
        assert held() == 1
        lock.release()
        assert held() == 0
    finally:
        lock.release()
        worker.stop()
