"""Every event type's payload schema: loaded from the repository, compiled, checked for compatibility.

Each app keeps one JSON Schema (draft 2020-12) per event type in `<app>/event_schemas/<type>.json`,
where `<type>` ends in its version (`customer.created.v1`). The schema describes the envelope's
`data`; `envelope.v1.json` describes the envelope itself. A property holding personal data carries
`"x-personal-data": true`: activity entries and logs leave those out.

Validating a message with `jsonschema` costs ~40 µs; the consumer validates tens of thousands a
second, so the schemas are compiled into plain Python checks for the keywords they use (a schema
using any other keyword is handed to `jsonschema`). Errors name the path and the keyword, never
the value, so they can be logged and stored without personal data.

A schema may only change compatibly within its version: optional properties may be added;
a new required property, a removed property or a changed type needs a new `.vN`
(`compatibility_problems`, enforced by the contract tests against the git history).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from django.apps import apps
from django.conf import settings
from jsonschema import Draft202012Validator

SCHEMA_DIR = "event_schemas"
ENVELOPE = "envelope.v1"
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.v[1-9][0-9]*$")

Check = Callable[[Any, str, list], None]
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated", "readOnly"}
)
_COMPILED = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)


@dataclass(frozen=True)
class EventSchema:
    event_type: str
    app_label: str
    path: Path
    schema: dict
    check: Check

    @property
    def personal_fields(self) -> frozenset[str]:
        return frozenset(
            name for name, prop in self.schema.get("properties", {}).items() if prop.get("x-personal-data") is True
        )

    def errors(self, data: Any, path: str = "data") -> list[str]:
        found: list[str] = []
        self.check(data, path, found)
        return found


# ---------------------------------------------------------------- loading


def schema_dirs() -> list[tuple[str, Path]]:
    """(app label, directory) for every project app that keeps event schemas."""
    base = Path(settings.BASE_DIR).resolve()
    found = []
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if base in path.parents and (path / SCHEMA_DIR).is_dir():
            found.append((config.label, path / SCHEMA_DIR))
    return found


@functools.cache
def registry() -> dict[str, EventSchema]:
    """Every event type's schema. The owning app's file wins over a copy kept in `customers`."""
    schemas: dict[str, EventSchema] = {}
    for app_label, directory in sorted(schema_dirs(), key=lambda item: item[0] != "customers"):
        for path in sorted(directory.glob("*.json")):
            name = path.name.removesuffix(".json")
            schema = json.loads(path.read_text())
            Draft202012Validator.check_schema(schema)
            previous = schemas.get(name)
            if previous is not None and previous.app_label != "customers":
                raise ValueError(f"Two schemas for {name}: {previous.path} and {path}")
            schemas[name] = EventSchema(name, app_label, path, schema, compile_schema(schema))
    return schemas


def schema_for(event_type: str) -> EventSchema | None:
    return registry().get(event_type)


def event_types() -> list[str]:
    return sorted(name for name in registry() if name != ENVELOPE)


def validation_errors(event_type: str, data: Any) -> list[str]:
    """What is wrong with an event's `data` (no values quoted); a type without a schema is an error."""
    schema = schema_for(event_type)
    if schema is None:
        return [f"no schema for {event_type} (add {SCHEMA_DIR}/{event_type}.json)"]
    return schema.errors(data)


def envelope_errors(envelope: Any) -> list[str]:
    return registry()[ENVELOPE].errors(envelope, "envelope")


def without_personal_data(event_type: str, data: dict) -> dict:
    """The payload minus every property its schema flags as personal (and minus everything if unknown)."""
    schema = schema_for(event_type)
    if schema is None or not isinstance(data, dict):
        return {}
    personal = schema.personal_fields
    return {key: value for key, value in data.items() if key not in personal}


# ---------------------------------------------------------------- compiling


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "array":
        return isinstance(value, list)
    if name == "null":
        return value is None
    raise ValueError(f"unknown JSON type {name!r}")


def _valid_format(value: str, fmt: str) -> bool:
    try:
        if fmt == "date-time":
            parsed = datetime.fromisoformat(value)
            return "T" in value.upper() and parsed.tzinfo is not None
        if fmt == "date":
            date.fromisoformat(value)
            return len(value) == 10
        if fmt == "uuid":
            UUID(value)
            return len(value) == 36
    except ValueError:
        return False
    if fmt == "email":
        local, _, domain = value.rpartition("@")
        return bool(local) and "." in domain and " " not in value
    return True  # other formats are annotations only


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def compile_schema(schema: Any) -> Check:
    if schema is True or schema == {}:
        return lambda value, path, errors: None
    if schema is False:
        return lambda value, path, errors: errors.append(f"{path}: not allowed")
    unknown = {key for key in schema if key not in _COMPILED and key not in _ANNOTATIONS and not key.startswith("x-")}
    if unknown:
        return _fallback(schema)

    checks: list[Check] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]

        def check_type(value, path, errors, types=tuple(types)):
            if not any(_is_type(value, name) for name in types):
                errors.append(f"{path}: type")

        checks.append(check_type)
    if "enum" in schema:
        options = schema["enum"]
        checks.append(
            lambda value, path, errors: (
                None if any(_equal(value, option) for option in options) else errors.append(f"{path}: enum")
            )
        )
    if "const" in schema:
        expected = schema["const"]
        checks.append(lambda value, path, errors: None if _equal(value, expected) else errors.append(f"{path}: const"))
    checks += _string_checks(schema) + _number_checks(schema) + _object_checks(schema) + _array_checks(schema)

    def check(value, path, errors):
        for one in checks:
            one(value, path, errors)

    return check


def _string_checks(schema: dict) -> list[Check]:
    checks: list[Check] = []
    if "minLength" in schema or "maxLength" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength")

        def check_length(value, path, errors):
            if isinstance(value, str) and (len(value) < low or (high is not None and len(value) > high)):
                errors.append(f"{path}: {'minLength' if len(value) < low else 'maxLength'}")

        checks.append(check_length)
    if "pattern" in schema:
        pattern = re.compile(schema["pattern"])
        checks.append(
            lambda value, path, errors: (
                errors.append(f"{path}: pattern") if isinstance(value, str) and not pattern.search(value) else None
            )
        )
    if "format" in schema:
        fmt = schema["format"]
        checks.append(
            lambda value, path, errors: (
                errors.append(f"{path}: format") if isinstance(value, str) and not _valid_format(value, fmt) else None
            )
        )
    return checks


def _number_checks(schema: dict) -> list[Check]:
    bounds = [
        (name, schema[name])
        for name in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if name in schema
    ]
    if not bounds:
        return []
    tests = {
        "minimum": lambda v, b: v >= b,
        "maximum": lambda v, b: v <= b,
        "exclusiveMinimum": lambda v, b: v > b,
        "exclusiveMaximum": lambda v, b: v < b,
    }

    def check_bounds(value, path, errors):
        if isinstance(value, int | float) and not isinstance(value, bool):
            for name, bound in bounds:
                if not tests[name](value, bound):
                    errors.append(f"{path}: {name}")

    return [check_bounds]


def _object_checks(schema: dict) -> list[Check]:
    properties = {name: compile_schema(sub) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    extra_check = None if extra is True else compile_schema(extra)
    if not properties and not required and extra_check is None:
        return []

    def check_object(value, path, errors):
        if not isinstance(value, dict):
            return
        for name in required:
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, item in value.items():
            sub = properties.get(name)
            if sub is not None:
                sub(item, f"{path}.{name}", errors)
            elif extra is False:
                errors.append(f"{path}: additionalProperties ({str(name)[:50]})")
            elif extra_check is not None:
                extra_check(item, f"{path}.{name}", errors)

    return [check_object]


def _array_checks(schema: dict) -> list[Check]:
    if not any(key in schema for key in ("items", "minItems", "maxItems", "uniqueItems")):
        return []
    items = compile_schema(schema["items"]) if "items" in schema else None
    low, high, unique = schema.get("minItems", 0), schema.get("maxItems"), schema.get("uniqueItems", False)

    def check_array(value, path, errors):
        if not isinstance(value, list):
            return
        if len(value) < low:
            errors.append(f"{path}: minItems")
        if high is not None and len(value) > high:
            errors.append(f"{path}: maxItems")
        if unique and len({json.dumps(item, sort_keys=True) for item in value}) != len(value):
            errors.append(f"{path}: uniqueItems")
        if items is not None:
            for index, item in enumerate(value):
                items(item, f"{path}[{index}]", errors)

    return [check_array]


def _fallback(schema: dict) -> Check:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    def check(value, path, errors):
        for error in validator.iter_errors(value):
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            errors.append(f"{path}{where}: {error.validator}")

    return check


# ---------------------------------------------------------------- compatibility


def _constraints(schema: Any) -> Any:
    """A property's schema without annotations and without its sub-properties (compared separately)."""
    if not isinstance(schema, dict):
        return schema
    return {
        key: value
        for key, value in schema.items()
        if key not in _ANNOTATIONS and not key.startswith("x-") and key not in ("properties", "required")
    }


def compatibility_problems(old: dict, new: dict, path: str = "data") -> list[str]:
    """Why `new` cannot replace `old` under the same version: only optional properties may be added."""
    problems = []
    for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
        problems.append(f"{path}.{name}: became required")
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties", True) is False:
        problems.append(f"{path}: additional properties no longer allowed")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{path}.{name}: removed")
            continue
        new_prop = new_props[name]
        if _constraints(old_prop) != _constraints(new_prop):
            problems.append(f"{path}.{name}: type or constraints changed")
        if isinstance(old_prop, dict) and isinstance(new_prop, dict) and ("properties" in old_prop):
            problems += compatibility_problems(old_prop, new_prop, f"{path}.{name}")
    return problems
