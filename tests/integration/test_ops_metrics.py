"""Each service worker serves Prometheus metrics: task outcomes, queue and DLQ depth."""

import json
import re
import socket
import uuid
from pathlib import Path

import httpx

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
        "shared.metrics",
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
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            done = sample(
                text, "eventful_tasks_total", service="reports", state="succeeded",
                task="reports.record_signup",
            )  # fmt: skip
            dead = [sample(text, "eventful_dead_letters_total", service="reports", reason=r)
                    for r in ("malformed-body", "rejected")]  # fmt: skip
            return text if done == 1 and dead == [1, 1] else None

        text = wait_for(scraped, timeout=30)
        listening = listen_addresses(port)
    finally:
        worker.stop()
    assert listening == {"127.0.0.1"}, "metrics listen on loopback unless told otherwise"
    assert sample(text, "eventful_dlq_messages", service="reports") == 3
    assert sample(text, "eventful_queue_messages_ready", queue="reports.dlq") == 3
    duration = {"service": "reports", "task": "reports.record_signup"}
    assert sample(text, "eventful_task_duration_seconds_count", **duration) == 1
    assert sample(text, "eventful_queue_consumers", queue="reports.events") == 1
    assert sample(text, "eventful_broker_up") == 1
