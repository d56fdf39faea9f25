"""Which services make up the system: discovered, never named by the platform.

Each service declares itself in its own package (``ServiceDeclaration``: its topology,
its Celery app, its worker deployment, its migrations). One *system module*, named by the
``EVENTFUL_SYSTEM`` setting (default ``services``), lists the declarations this
deployment runs in ``SERVICES``; every platform tool (topology, permissions, migrations,
worker commands) reads that list.

Why a setting and not ``importlib.metadata`` entry points: entry points are read from the
installed distribution's metadata, written when ``pip install -e`` ran. Every checkout
sharing a virtualenv would then see the services of whichever checkout was installed
last, and a new service would exist only after a reinstall. A dotted module path is read
at run time from the code on ``sys.path``, is the same in a container, and a test can
point a process at a system with one more service by setting one variable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from shared.core.topology import ServiceTopology

T = TypeVar("T")


@dataclass(frozen=True)
class Deployment:
    """How a service's worker runs: its pool, how many processes, where metrics are served."""

    pool: str
    concurrency: str  # "--concurrency N" or "--autoscale MAX,MIN" (prefork only)
    metrics_port: int
    why: str


@dataclass(frozen=True)
class ServiceDeclaration:
    """Everything the platform needs to know about one service, kept in that service."""

    topology: ServiceTopology
    app: str  # the module whose ``app`` is the service's Celery app
    deployment: Deployment
    migrations: Path | None = None  # an alembic directory for the service's own tables

    @property
    def name(self) -> str:
        return self.topology.name


@cache
def load(system: str) -> dict[str, ServiceDeclaration]:
    """The declarations listed by the module ``system`` in ``SERVICES``, by name."""
    declared = importlib.import_module(system).SERVICES
    by_name: dict[str, ServiceDeclaration] = {}
    for declaration in declared:
        if not isinstance(declaration, ServiceDeclaration):
            raise TypeError(f"{system}.SERVICES holds {declaration!r}, not a ServiceDeclaration")
        if declaration.name in by_name:
            raise ValueError(f"{system}.SERVICES declares {declaration.name!r} twice")
        by_name[declaration.name] = declaration
    return by_name


def declarations() -> dict[str, ServiceDeclaration]:
    """The services of the system this process runs (``EVENTFUL_SYSTEM``)."""
    from shared.core.settings import get_settings

    return load(get_settings().eventful_system)


def declaration(name: str) -> ServiceDeclaration:
    found = declarations()
    try:
        return found[name]
    except KeyError:
        known = ", ".join(sorted(found))
        raise KeyError(f"unknown service {name!r}; known services: {known}") from None


class Discovered(Mapping[str, T], Generic[T]):
    """A read-only view, by service name, of something derived from each declaration;
    discovered on first use, so importing the platform never imports a service."""

    def __init__(self, derive: Callable[[ServiceDeclaration], T]) -> None:
        self._derive = derive

    def __getitem__(self, name: str) -> T:
        return self._derive(declaration(name))

    def __iter__(self) -> Iterator[str]:
        return iter(declarations())

    def __len__(self) -> int:
        return len(declarations())
