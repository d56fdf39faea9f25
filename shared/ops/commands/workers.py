"""``eventful workers|check|worker|worker-alive``: how each service's worker runs."""

import importlib
import os
import sys
from dataclasses import asdict

import click
from kombu.exceptions import OperationalError

from shared.core.settings import get_settings
from shared.core.system import declaration
from shared.core.topology import SERVICES
from shared.ops import alive
from shared.ops.commands.common import AS_JSON, fail, print_json
from shared.ops.deployments import WORKERS
from shared.worker.check import check_app


@click.command("workers")
@AS_JSON
def cmd_workers(as_json: bool) -> int:
    """The command that deploys each service's worker, as the service declares it."""
    if as_json:
        print_json([{**asdict(d), "command": d.command()} for d in WORKERS.values()])
        return 0
    for deployment in WORKERS.values():
        print(f"# {deployment.service}: {deployment.pool} ({deployment.why})")
        print(f"METRICS_PORT={deployment.metrics_port} {deployment.command()}")
    return 0


@click.command("check")
@click.argument("services", nargs=-1)
@AS_JSON
def cmd_check(services: tuple[str, ...], as_json: bool) -> int:
    """Settings that cannot work together (retries, time limits, pool, result lifetime,
    consumer_timeout, beat); exit 1 on a fatal one. Workers run it as they start."""
    found = []
    for name in services or list(SERVICES):
        declared = declaration(name)
        app = importlib.import_module(declared.app).app
        timeout = get_settings().broker_consumer_timeout
        found += check_app(app, declared.deployment.pool, timeout)
    if as_json:
        print_json([asdict(f) for f in found])
    else:
        for finding in found:
            print(finding)
        fatal = sum(f.fatal for f in found)
        print(f"{len(found)} finding(s), {fatal} fatal")
    return 1 if any(f.fatal for f in found) else 0


@click.command("worker")
@click.argument("service_name", metavar="SERVICE")
@click.option("-n", "--hostname", help="node name instead of SERVICE@%h")
def cmd_worker(service_name: str, hostname: str | None) -> int:
    """Run a service's worker as it is deployed: what make, compose and the cluster run."""
    deployment = WORKERS[service_name]
    argv = deployment.argv()
    if hostname:
        argv[argv.index("-n") + 1] = hostname
    # The deployment's port unless the operator's environment says otherwise: given to the
    # worker's own environment, this process's is left as it is.
    env = {"METRICS_PORT": str(deployment.metrics_port), **os.environ}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "celery", *argv], env)


@click.command("worker-alive")
@click.argument("service_name", metavar="SERVICE")
@click.option("-n", "--hostname", help="node name instead of SERVICE@%h (as given to `worker`)")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds, in all")
def cmd_worker_alive(service_name: str, hostname: str | None, timeout: float) -> int:
    """Exit 0 if this host's worker of SERVICE answers a ping within --timeout seconds, 1 if
    not, 2 if the broker cannot be reached (a container HEALTHCHECK, a systemd watchdog)."""
    node = alive.node_name(service_name, hostname)
    try:
        answered = alive.answers(service_name, node, timeout)
    except OperationalError as exc:
        return fail(f"cannot reach the broker to ping {node}: {exc}")
    print(f"{node}: {'alive' if answered else f'no answer within {timeout:g}s'}")
    return 0 if answered else 1


COMMANDS = (
    cmd_workers,
    cmd_check,
    cmd_worker,
    cmd_worker_alive,
)
