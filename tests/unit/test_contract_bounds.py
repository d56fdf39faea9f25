"""Every string a contract carries is bounded, so every receiver can store what it accepts."""

from typing import Any

import pytest

from shared.contracts.models import Command, Event

#: Strings whose format bounds them.
BOUNDED_FORMATS = {"uuid", "date", "date-time"}


def contracts() -> list[type]:
    return [*Event.registry.values(), *Command.__subclasses__()]


def unbounded_strings(schema: Any, path: str = "") -> list[str]:
    """JSON Schema paths of strings with no maxLength, const, enum or bounding format."""
    found = []
    if isinstance(schema, dict):
        if (
            schema.get("type") == "string"
            and "maxLength" not in schema
            and not {"const", "enum"} & set(schema)
            and schema.get("format") not in BOUNDED_FORMATS
        ):
            found.append(path or "/")
        if isinstance(schema.get("additionalProperties"), dict):  # a map
            if "maxProperties" not in schema:
                found.append(f"{path} (a map with no maxProperties)")
            names = schema.get("propertyNames", {"type": "string"})
            found += unbounded_strings(names, f"{path}/<key>")
        for key, value in schema.items():
            if key != "propertyNames":
                found += unbounded_strings(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += unbounded_strings(value, f"{path}/{i}")
    return found


@pytest.mark.parametrize("contract", contracts(), ids=lambda c: c.__name__)
def test_every_string_in_a_contract_is_bounded(contract):
    assert unbounded_strings(contract.model_json_schema()) == []


def test_the_check_finds_an_unbounded_string():
    schema = {"properties": {"a": {"type": "string"}, "m": {"additionalProperties": {}}}}
    assert unbounded_strings(schema) == ["/properties/a", "/properties/m (a map with no "
                                         "maxProperties)", "/properties/m/<key>"]  # fmt: skip
