"""What may change in a published contract: nothing but new optional fields.

Compares two JSON Schemas of one contract, the published snapshot and what the code says
now, and names every field whose change would break a producer or a consumer still on the
published shape: a field removed or renamed, a field made required, a new required field,
any change to an existing field's type, format, pattern, bounds or default (narrowed: old
producers' messages are rejected; widened: old consumers reject new messages, and the
columns sized from a bound no longer hold it). Titles and descriptions are free to change.
"""

from typing import Any

#: Documentation only: changing them changes no message's validity.
FREE = frozenset({"title", "description", "examples"})
#: Keywords whose value holds one schema per list entry.
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
#: Keywords whose value is one schema, and how a path names what it describes.
SCHEMA_SLOTS = {"items": "[]", "additionalProperties": "[*]", "propertyNames": "<key>"}
UPPER_BOUNDS = frozenset({"maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties"})
LOWER_BOUNDS = frozenset({"minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties"})


def inline(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """The schema with every local ``#/$defs/..`` reference replaced by what it names
    (contracts are not recursive), so two schemas compare field by field."""
    if isinstance(schema, dict):
        defs = {**(defs or {}), **schema.get("$defs", {})}
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            target = inline(defs[ref.removeprefix("#/$defs/")], defs)
            return {**target, **{k: inline(v, defs) for k, v in schema.items() if k != "$ref"}}
        return {k: inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [inline(item, defs) for item in schema]
    return schema


def breaking_changes(
    published: dict[str, Any], current: dict[str, Any], *, new_required_ok: bool = False
) -> list[str]:
    """Each change from ``published`` to ``current`` that breaks a reader or writer of
    ``published``, as ``field.path: what changed``; empty when compatible.
    ``new_required_ok``: a new version may add required fields (its readers are new)."""
    return _diff(inline(published), inline(current), "", new_required_ok)


def _diff(old: dict[str, Any], new: dict[str, Any], path: str, new_required_ok: bool) -> list[str]:
    found: list[str] = []
    old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name, schema in old_fields.items():
        where = f"{path}.{name}" if path else name
        if name not in new_fields:
            found.append(f"{where}: removed (or renamed)")
            continue
        if name in new_required - old_required:
            found.append(f"{where}: became required")
        found += _diff(schema, new_fields[name], where, new_required_ok)
    for name in sorted(new_fields.keys() - old_fields.keys()):
        if name in new_required and not new_required_ok:
            found.append(f"{path + '.' if path else ''}{name}: new required field")
    keywords = (old.keys() | new.keys()) - FREE - {"properties", "required"}
    for key in sorted(keywords):
        found += _keyword(key, old.get(key), new.get(key), path or "(root)", new_required_ok)
    return found


def _keyword(key: str, old: Any, new: Any, where: str, new_required_ok: bool) -> list[str]:
    if old == new:
        return []
    if key in SCHEMA_SLOTS and isinstance(old, dict) and isinstance(new, dict):
        return _diff(old, new, where + SCHEMA_SLOTS[key], new_required_ok)
    lists = isinstance(old, list) and isinstance(new, list)
    if key in SCHEMA_LISTS and lists and len(old) == len(new):
        return [
            change
            for a, b in zip(old, new, strict=True)
            for change in _diff(a, b, where, new_required_ok)
        ]
    return [f"{where}: {key} {_show(old)} -> {_show(new)}{_direction(key, old, new)}"]


def _direction(key: str, old: Any, new: Any) -> str:
    if not (isinstance(old, int | float) and isinstance(new, int | float)):
        return ""
    tighter = new < old if key in UPPER_BOUNDS else new > old if key in LOWER_BOUNDS else None
    return "" if tighter is None else " (tightened)" if tighter else " (loosened)"


def _show(value: Any) -> str:
    return "(none)" if value is None else repr(value)
