"""The compatibility gate: a published (type, version) may only gain optional fields.

The published contracts are the committed schemas (``contracts/``); the code may not
break them. Each kind of break is planted below on ``user.signed_up`` v1 and must be
named, field and all; adding an optional field must pass.
"""

import json
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import ConfigDict, EmailStr, Field, create_model

from contracts import UserSignedUp
from shared.contracts import documents as contract_docs
from shared.contracts.compatibility import breaking_changes
from shared.contracts.evolution import _not_readable_as
from shared.contracts.models import EMAIL_MAX, UPCASTERS, Event, event_types

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
V1_FIELDS = {
    "user_id": (UUID, ...),
    "email": (EmailStr, Field(max_length=EMAIL_MAX)),
    "name": (str, Field(min_length=1, max_length=200)),
    "phone": (str | None, Field(None, max_length=32)),
}


def v1_with(**changes) -> dict:
    """``user.signed_up`` v1's schema with its payload declared as ``changes`` say
    (None: the field is gone)."""
    fields = {k: v for k, v in {**V1_FIELDS, **changes}.items() if v is not None}
    payload = create_model("UserSignedUpPayload", __config__=ConfigDict(extra="ignore"), **fields)
    schema = UserSignedUp.model_json_schema()
    properties = {**schema["properties"], "payload": payload.model_json_schema()}
    return {**schema, "$defs": {}, "properties": properties}


def test_no_published_contract_is_broken():
    problems = contract_docs.breaks(CONTRACTS)
    assert problems == [], "\n".join(
        ["the code breaks published contracts; add a new version instead:", *problems]
    )


def test_the_unchanged_contract_is_compatible_with_itself():
    assert breaking_changes(UserSignedUp.model_json_schema(), v1_with()) == []


def test_adding_an_optional_field_passes():
    added = v1_with(referrer=(str | None, Field(None, max_length=100)))
    assert breaking_changes(UserSignedUp.model_json_schema(), added) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"phone": None}, "payload.phone: removed (or renamed)"),
        (
            {"name": None, "full_name": (str, Field(min_length=1, max_length=200))},
            "payload.name: removed (or renamed)",
        ),
        ({"phone": (str, Field("", max_length=32))}, "payload.phone: anyOf"),
        ({"user_id": (int, ...)}, "payload.user_id: type 'string' -> 'integer'"),
        ({"locale": (str, Field(max_length=35))}, "payload.locale: new required field"),
        ({"phone": (str | None, Field(max_length=32))}, "payload.phone: became required"),
        (
            {"name": (str, Field(min_length=1, max_length=100))},
            "payload.name: maxLength 200 -> 100 (tightened)",
        ),
        ({"name": (str, Field(min_length=1, max_length=500))}, "payload.name: maxLength 200"),
    ],
    ids=[
        "removed",
        "renamed",
        "narrowed-nullable",
        "retyped",
        "new-required",
        "made-required",
        "tightened-bound",
        "loosened-bound",
    ],  # fmt: skip
)
def test_a_breaking_change_fails_naming_the_field(change, named):
    problems = breaking_changes(UserSignedUp.model_json_schema(), v1_with(**change))
    assert any(p.startswith(named) for p in problems), problems


def test_contracts_write_refuses_to_overwrite_a_published_contract_with_a_break(tmp_path):
    contract_docs.write(tmp_path)
    published = tmp_path / "events/user.signed_up/v1.json"
    schema = json.loads(published.read_text())
    schema["$defs"]["UserSignedUpPayload"]["properties"]["name"]["maxLength"] = 300
    published.write_text(contract_docs.render(schema))  # as if it had been published so

    with pytest.raises(contract_docs.BreakingChange, match=r"payload\.name: maxLength 300 -> 200"):
        contract_docs.write(tmp_path)
    assert json.loads(published.read_text()) == schema  # nothing written


def test_each_new_version_keeps_the_fields_of_the_one_before_and_has_an_upcaster():
    for event_type in event_types():
        versions = sorted(v for t, v in Event.registry if t == event_type)
        assert versions == list(range(1, len(versions) + 1)), event_type
        for older, newer in zip(versions, versions[1:], strict=False):
            assert _not_readable_as(event_type, newer, older) == (), (event_type, newer)
            assert (event_type, older) in UPCASTERS, f"{event_type}: no upcaster v{older}"
