"""`make run`'s Prometheus: a configuration generated for what runs, served on loopback.

It scrapes every worker's ``/metrics`` through ``file_sd_configs``: each worker writes its
address into the targets directory as it starts and removes it as it stops
(``METRICS_TARGETS_DIR``, shared/ops/metrics.py), so a second worker of a service, on whatever
port it found free, is scraped too. It scrapes RabbitMQ's own exporter (the
``rabbitmq_prometheus`` plugin, enabled by infra/ensure-services.sh) for the system's vhost
only: queue depth and consumers, once per broker. It evaluates infra/prometheus/alerts.yml.
Its data lives in the run's log directory. Debian's ``prometheus`` package provides it.
"""

import json
import shutil
import socket
from pathlib import Path

from infra.processes import ROOT
from infra.supervisor import Program

RULES = ROOT / "infra" / "prometheus" / "alerts.yml"
#: Short, for a developer's machine: a worker that started is a target within seconds.
SCRAPE_INTERVAL = "5s"
BROKER_FAMILIES = ["queue_coarse_metrics", "queue_consumer_count"]


def config(targets: Path, vhost: str, broker_exporter: str) -> dict:
    """The scrape configuration (YAML reads JSON, so it is written as JSON)."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "eventful-workers",
                "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": "5s"}],
            },
            {
                "job_name": "rabbitmq",
                "metrics_path": "/metrics/detailed",
                "params": {"vhost": [vhost], "family": BROKER_FAMILIES},
                "static_configs": [{"targets": [broker_exporter]}],
            },
        ],
    }


def unavailable(port: int) -> str | None:
    """Why ``make run`` cannot start its Prometheus on ``port``, or None."""
    if shutil.which("prometheus") is None:
        return "not installed: make services installs it"
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return f"port {port} is in use (another Prometheus?): pass --prometheus-port"
    return None


def prometheus(port: int, logs: Path, vhost: str, broker_exporter: str) -> Program:
    """The Prometheus of a run whose workers register in ``logs/metrics-targets``."""
    targets = targets_dir(logs)
    shutil.rmtree(targets, ignore_errors=True)  # what a previous run in this directory left
    targets.mkdir(parents=True)
    path = logs / "prometheus.yml"
    path.write_text(json.dumps(config(targets, vhost, broker_exporter), indent=2))
    return Program(
        "prometheus",
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={logs / 'prometheus-data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )  # fmt: skip


def targets_dir(logs: Path) -> Path:
    return logs / "metrics-targets"
