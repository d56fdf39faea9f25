"""The contracts as documents: a JSON Schema per (event type, version) and per command,
and the system's AsyncAPI 3.0 document, generated from the code and committed.

``eventful contracts write`` regenerates them; ``eventful contracts check`` (and the test
suite) fails when the committed documents and the code differ. A committed schema is a
*published* one: ``write`` refuses to overwrite it with a breaking change or to delete it
(``shared.contracts.compatibility``), so a break can only land by deleting the file by
hand, in a diff a reviewer sees. The fix for a break is a new version, not a new snapshot.
"""

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.contracts import asyncapi
from shared.contracts.compatibility import breaking_changes
from shared.contracts.models import Command, Event
from shared.core.topology import SERVICES

DRAFT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "eventful contracts write  (or: python -m shared.ops contracts write)"


class BreakingChange(ValueError):
    """A published contract would change in a way its producers or consumers cannot read."""


def _schema(contract: type[BaseModel], ident: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "$id": ident, **contract.model_json_schema()}


def documents() -> dict[str, Any]:
    """Every document, by its path under the contracts directory."""
    services = list(SERVICES.values())
    names = {s.name for s in services}
    docs: dict[str, Any] = {"asyncapi.json": asyncapi.document(services)}
    for (event_type, version), contract in sorted(Event.registry.items()):
        path = f"events/{event_type}/v{version}.json"
        docs[path] = _schema(contract, f"urn:eventful:event:{event_type}:v{version}")
    for task, command in sorted(Command.registry.items()):
        if command.owner() in names:
            docs[f"commands/{task}.json"] = _schema(command, f"urn:eventful:command:{task}")
    return docs


def render(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _committed(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*.json"))}


def breaks(directory: Path) -> list[str]:
    """Each published (committed) contract the code now breaks, naming the field."""
    current = documents()
    found = []
    for path, text in _committed(directory).items():
        if path == "asyncapi.json":
            continue
        name = path.removesuffix(".json").replace("/v", " v").split("/", 1)[1]
        if path not in current:
            found.append(f"{name}: published, no longer in the code")
            continue
        found += [f"{name}: {c}" for c in breaking_changes(json.loads(text), current[path])]
    return found


def drift(directory: Path) -> list[str]:
    """Each document that differs between ``directory`` and the code."""
    current = {path: render(doc) for path, doc in documents().items()}
    committed = _committed(directory)
    found = []
    for path in sorted(current.keys() | committed.keys()):
        if path not in committed:
            found.append(f"{path}: not committed")
        elif path not in current:
            found.append(f"{path}: committed, not in the code")
        elif current[path] != committed[path]:
            found.append(f"{path}: differs from the code")
    return found


def write(directory: Path) -> list[str]:
    """Write every document; refuses (``BreakingChange``) before writing anything if the
    code breaks a published contract. Returns the paths written."""
    problems = breaks(directory) if directory.exists() else []
    if problems:
        raise BreakingChange(
            "refusing to overwrite published contracts; add a new version instead:\n  "
            + "\n  ".join(problems)
        )
    written = []
    for path, doc in documents().items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != render(doc):
            target.write_text(render(doc))
            written.append(path)
    return written
