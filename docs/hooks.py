"""The reference pages' tables, generated from the code at every `mkdocs build`, so none can
drift: a page holds ``<!-- generated: NAME -->`` on a line of its own and the build puts
``GENERATORS[NAME]()`` there. Each generator imports through one stable entry point (the
``eventful`` script of pyproject.toml, a settings class, shared.worker.trust, bench.report), so a
module that moves costs one line here.

``python docs/hooks.py PAGE`` prints a page as the build renders it (what tests read)."""

import importlib
import inspect
import json
import re
import sys
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path

import click
from pydantic import BaseModel
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent

MARK = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)
#: The published bench results the performance table is made from (`make bench-publish`).
BENCH_RESULTS = "bench/results/latest.json"
#: Modules whose settings classes are the configuration reference, platform first; a class's
#: sections (``Settings.metrics``) follow it, each a table of its own.
SETTINGS_MODULES = (
    "shared.core.settings",
    "services.signup.config",
    "services.notifier.config",
    "services.reports.config",
)


def cli() -> str:
    """Every ``eventful`` command's ``--help``, from the group the console script runs."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module = importlib.import_module(scripts["eventful"].split(":")[0])
    groups = [v for v in vars(module).values() if isinstance(v, click.Group)]
    children = {id(c) for g in groups for c in g.commands.values()}
    (root,) = [g for g in groups if id(g) not in children]
    ctx = click.Context(root, info_name="eventful", terminal_width=100, **root.context_settings)
    return "\n".join(_help(root, ctx))


def _help(command: click.Command, ctx: click.Context) -> list[str]:
    out = [f"## `{ctx.command_path}`", "", "```text", command.get_help(ctx), "```", ""]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        out += _help(sub, click.Context(sub, info_name=name, parent=ctx, terminal_width=100))
    return out


def settings() -> str:
    """One table per settings class: variable, default, description (the field's own)."""
    out = []
    for name in SETTINGS_MODULES:
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls.__module__ == name:
                out += _settings_table(cls)
    return "\n".join(out)


def _settings_table(cls: type[BaseModel], title: str = "") -> list[str]:
    inherited = {f for base in cls.__mro__[1:] for f in getattr(base, "model_fields", {})}
    sections = {f: i.annotation for f, i in cls.model_fields.items()
                if f not in inherited and isinstance(i.annotation, type)
                and issubclass(i.annotation, BaseModel)}  # fmt: skip
    about = inspect.cleandoc(cls.__dict__.get("__doc__") or "").split("\n\n")[0]
    rows = [title or f"## `{cls.__module__}.{cls.__name__}`", "", about, "",
            "| variable | default | meaning |", "|---|---|---|"]  # fmt: skip
    for field, info in cls.model_fields.items():
        if field in inherited or field in sections:
            continue
        default = "" if info.default_factory or info.default in (None, "") else info.default
        nested = typing.get_origin(info.annotation) is dict
        variable = f"{field.upper()}__<NAME>" if nested else field.upper()
        description = (info.description or "").replace("|", "\\|")
        shown = f"`{default}`" if default != "" else "—"
        rows.append(f"| `{variable}` | {shown} | {description} |")
    for field, section in sections.items():
        rows += ["", *_settings_table(section, f"### `settings.{field}` (`{section.__name__}`)")]
    return [*rows, ""]


def events() -> str:
    """Each event version's and each command's payload, from the JSON Schemas in contracts/."""
    out = []
    for kind in ("events", "commands"):
        for path in sorted((ROOT / "contracts" / kind).rglob("*.json")):
            schema = json.loads(path.read_text())
            body = schema["$defs"][schema["properties"]["payload"]["$ref"].split("/")[-1]] \
                if kind == "events" else schema  # fmt: skip
            title = path.relative_to(ROOT / "contracts" / kind).with_suffix("")
            about = f"`contracts/{kind}/{title}.json`. {schema.get('description', '')}"
            out += [f"## `{title}`", "", about.strip(), ""]
            out += _fields(body)
    return "\n".join(out)


def _fields(schema: dict) -> list[str]:
    required = set(schema.get("required", ()))
    rows = ["| field | type | required | bounds |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        kinds = prop.get("anyOf", [prop])
        types = " or ".join(k.get("format", k.get("type", "object")) for k in kinds)
        bounds = ", ".join(f"{k} {v}" for p in kinds for k, v in p.items()
                           if k in ("maxLength", "minLength", "minimum", "maximum", "pattern",
                                    "maxProperties"))  # fmt: skip
        bounds = bounds.replace("|", "\\|")
        rows.append(f"| `{name}` | {types} | {'yes' if name in required else 'no'} | {bounds} |")
    return [*rows, ""]


def trust() -> str:
    """The table the worker applies to a message from anyone but the service itself."""
    return importlib.import_module("shared.worker.trust").markdown()


def bench() -> str:
    """The published bench run's table and chart."""
    report = importlib.import_module("bench.report")
    path = ROOT / BENCH_RESULTS
    return report.docs_section(report.load(path), path, Path(BENCH_RESULTS).with_suffix(".png"))


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli, "settings": settings, "events": events, "trust": trust, "bench": bench,
}  # fmt: skip


def render(markdown: str) -> str:
    """``markdown`` with each generated mark replaced by its table."""
    return MARK.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def on_config(config):
    """The checkout's own code, not an installed copy, is what the tables describe."""
    sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page, config, files) -> str:
    return render(markdown)


def on_files(files, config):
    """The bench chart lives beside its JSON, outside docs/: the site serves it from there."""
    from mkdocs.structure.files import File

    png = str(Path(BENCH_RESULTS).with_suffix(".png"))
    files.append(File(png, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


if __name__ == "__main__":
    on_config(None)
    print(render((ROOT / "docs" / sys.argv[1]).read_text()))
