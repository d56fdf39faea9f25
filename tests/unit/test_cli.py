"""The ``eventful`` console script: every command explains itself, listings speak JSON."""

import json

import click
import pytest

from shared.ops.cli import cli, main
from shared.ops.deployments import WORKERS


def commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


@pytest.mark.parametrize("path", [(), *commands(cli)], ids=" ".join)
def test_every_command_has_help(path, capsys):
    assert main([*path, "--help"]) == 0
    assert "Usage: eventful" in capsys.readouterr().out


def test_the_listings_take_json():
    listings = {("queues",), ("workers",), ("dlq", "list"), ("dlq", "show"), ("outbox", "status")}
    listings.add(("topology", "plan"))
    for path in listings:
        command = cli
        for name in path:
            command = command.commands[name]
        assert "as_json" in [p.name for p in command.params], path


def test_workers_json_lists_every_declared_worker_with_its_command(capsys):
    assert main(["workers", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {w["service"]: w["command"] for w in listed} == {
        name: d.command() for name, d in WORKERS.items()
    }


def test_an_unknown_service_is_an_error_that_names_the_known_ones(capsys):
    assert main(["dlq", "list", "billing"]) == 2
    assert f"known services: {', '.join(sorted(WORKERS))}" in capsys.readouterr().err
