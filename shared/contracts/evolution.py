"""Reading an event of one version as the version a handler was written for.

A consumer is never deployed in lockstep with its producers, so an event may arrive in a
version other than its handler's:

- older: upcasters (``shared.contracts.models.upcaster``) turn it into the next version, step by
  step, until it has the handler's shape;
- newer: each version keeps every field of the one before unchanged (the contract rule,
  checked here and by the compatibility test), so the newer event is read as the older one,
  ignoring what the older reader does not know (a tolerant reader);
- a version this process has no contract for, or with no way to the handler's: the event
  is dead-lettered with reason ``unsupported-version`` and can be replayed once the code
  that knows it is deployed (``eventful dlq replay``).
"""

from functools import cache
from typing import Any

from shared.contracts.compatibility import breaking_changes, inline
from shared.contracts.models import UPCASTERS, Event


class UnsupportedVersion(ValueError):
    """No contract for this (type, version), or no way from it to a handler's version."""


def contract_of(event_type: str, data: Any) -> type[Event] | None:
    """The contract of the version ``data`` says it is (none said: 1, as before versions
    were read); None if it names no integer version (the caller's contract then explains
    what is wrong with the envelope)."""
    version = data.get("version", 1) if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    try:
        return Event.registry[(event_type, version)]
    except KeyError:
        raise UnsupportedVersion(
            f"{event_type} v{version}: no contract for this version in this service"
        ) from None


def read_as(event: Event, contract: type[Event]) -> Event:
    """``event`` (valid under its own version's contract) in the shape of ``contract``."""
    if type(event) is contract:
        return event  # already valid as this contract: no copy to validate again
    want = contract.model_fields["version"].default
    data, have = event.model_dump(mode="json"), event.version
    while have < want:
        step = UPCASTERS.get((event.type, have))
        if step is None:
            raise UnsupportedVersion(f"{event.type} v{have}: no upcaster to v{have + 1}")
        data, have = step(data), have + 1
    if have > want:
        problems = _not_readable_as(event.type, have, want)
        if problems:
            raise UnsupportedVersion(
                f"{event.type} v{have} cannot be read as v{want}: {'; '.join(problems)}"
            )
        data = {**data, "version": want}
    return contract.model_validate(data)


@cache
def _not_readable_as(event_type: str, newer: int, older: int) -> tuple[str, ...]:
    """Why a ``newer`` payload could not be read as an ``older`` one (empty: it can)."""
    old, new = (
        inline(Event.registry[(event_type, v)].model_json_schema())["properties"]["payload"]
        for v in (older, newer)
    )
    return tuple(breaking_changes(old, new, new_required_ok=True))
