"""The schema contract: every event type has a versioned schema, schemas evolve compatibly.

That every event recorded during the whole test run validates is checked by the autouse fixture
in `tests/events/contract.py` (wired in `tests/conftest.py`).
"""

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from customers.messaging import inbound, schemas
from customers.models import OutboxEvent
from tests.events.contract import contract_problems

ROOT = Path(__file__).resolve().parents[2]
APPS = ["customers", "addresses", "consent", "segments", "privacy"]
EVENT_TYPE_LITERAL = re.compile(r"""["']([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+\.v[1-9][0-9]*)["']""")


def event_types_named_in_code() -> set[str]:
    """Every string literal in the apps' code that looks like an event type (`a.b.vN`)."""
    found = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            found |= set(EVENT_TYPE_LITERAL.findall(path.read_text()))
    return found - {schemas.ENVELOPE}


def test_every_event_type_named_anywhere_has_a_schema():
    named = event_types_named_in_code() | set(inbound.HANDLED_TYPES)
    assert {"customer.created.v1", "order.created.v1", "customer.metrics.updated.v1"} <= named
    missing = sorted(name for name in named if schemas.schema_for(name) is None)
    assert missing == [], f"add <app>/event_schemas/<type>.json for {missing}"


@pytest.mark.parametrize("event_type", [*schemas.event_types(), schemas.ENVELOPE])
def test_schema_is_valid_json_schema_and_flags_personal_data(event_type):
    found = schemas.schema_for(event_type)
    Draft202012Validator.check_schema(found.schema)
    assert found.path.name == f"{event_type}.json"
    assert found.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert found.schema["$id"].endswith(f"/{event_type}.json")
    assert found.schema.get("type") == "object"
    unflagged = [name for name, prop in found.schema["properties"].items() if "x-personal-data" not in prop]
    assert unflagged == [], f"{event_type}: flag x-personal-data (true or false) on {unflagged}"
    assert set(found.schema.get("required", ())) <= set(found.schema["properties"])


def test_personal_fields_are_the_flagged_ones():
    assert schemas.schema_for("customer.created.v1").personal_fields == {"email", "first_name", "last_name"}
    assert schemas.schema_for("identity.user.registered.v1").personal_fields == {"email", "first_name", "last_name"}
    assert schemas.schema_for("order.created.v1").personal_fields == frozenset()
    assert schemas.without_personal_data("customer.created.v1", {"email": "a@b.c", "status": "active"}) == {
        "status": "active"
    }
    assert schemas.without_personal_data("no.such.type.v1", {"x": 1}) == {}


ORDER = {
    "order_id": "o-1",
    "customer_id": "2f1c6f1e-9d1b-4c43-9e8f-5f4f0d0c9a11",
    "total": "19.90",
    "currency": "EUR",
    "status": "open",
    "placed_at": "2026-01-05T10:00:00+00:00",
}
# (event type, data): valid and invalid documents, none depending on `format` (jsonschema only
# checks date-time with an optional package; our compiled checks always do, tested below).
CORPUS = [
    ("order.created.v1", ORDER),
    ("order.created.v1", {**ORDER, "total": 19.9, "extra": {"nested": True}}),
    ("order.created.v1", {**ORDER, "total": "19.999"}),
    ("order.created.v1", {**ORDER, "total": -1}),
    ("order.created.v1", {**ORDER, "total": True}),
    ("order.created.v1", {**ORDER, "currency": "eur"}),
    ("order.created.v1", {**ORDER, "status": "lost"}),
    ("order.created.v1", {k: v for k, v in ORDER.items() if k != "order_id"}),
    ("order.created.v1", {**ORDER, "order_id": ""}),
    ("order.created.v1", {**ORDER, "order_id": "x" * 65}),
    ("order.created.v1", []),
    ("support.case.closed.v1", {"case_id": "c", "customer_id": "x", "rating": 5, "closed_at": "2026-01-01T00:00:00Z"}),
    ("support.case.closed.v1", {"case_id": "c", "customer_id": "x", "rating": 6, "closed_at": "2026-01-01T00:00:00Z"}),
    ("support.case.closed.v1", {"case_id": "c", "customer_id": "x", "rating": 4.0, "closed_at": "2026-01-01T00:00Z"}),
    ("support.case.closed.v1", {"case_id": "c", "customer_id": "x", "rating": "4", "closed_at": "2026-01-01T00:00Z"}),
    ("loyalty.points.earned.v1", {"customer_id": "x", "points": 0, "occurred_at": "2026-01-01T00:00:00Z"}),
    ("loyalty.points.earned.v1", {"customer_id": "x", "points": 10, "occurred_at": "2026-01-01T00:00:00Z"}),
    ("customer.updated.v1", {"customer_id": ORDER["customer_id"], "changed_fields": ["email", "email"]}),
    ("customer.updated.v1", {"customer_id": ORDER["customer_id"], "changed_fields": ["email"], "version": 2}),
    ("customer.updated.v1", {"customer_id": ORDER["customer_id"], "surprise": 1}),
    ("customer.restriction_changed.v1", {"customer_id": ORDER["customer_id"], "restricted": 1}),
    ("customer.metrics.updated.v1", {"customer_id": ORDER["customer_id"], "satisfaction_score": None}),
    ("customer.metrics.updated.v1", {"customer_id": ORDER["customer_id"], "satisfaction_score": "6.00"}),
]


@pytest.mark.parametrize(("event_type", "data"), CORPUS)
def test_compiled_validator_agrees_with_jsonschema(event_type, data):
    schema = schemas.schema_for(event_type).schema
    expected = Draft202012Validator(schema).is_valid(data)
    assert (schemas.validation_errors(event_type, data) == []) is expected


def test_formats_and_error_messages_name_paths_not_values():
    bad = {**ORDER, "placed_at": "yesterday", "customer_id": "secret@example.com" * 10}
    errors = schemas.validation_errors("order.created.v1", bad)
    assert errors == ["data.customer_id: maxLength", "data.placed_at: format"]
    assert not any("secret" in error for error in errors)
    assert schemas.validation_errors("order.created.v1", {**ORDER, "placed_at": "2026-01-05T10:00:00"}) == [
        "data.placed_at: format"  # a time without its offset is ambiguous
    ]
    assert schemas.validation_errors("identity.user.registered.v1", {"user_id": "u", "email": "no-at-sign"}) == [
        "data.email: format"
    ]
    assert schemas.validation_errors("unknown.thing.v1", {}) == [
        "no schema for unknown.thing.v1 (add event_schemas/unknown.thing.v1.json)"
    ]


def test_unsupported_keywords_fall_back_to_jsonschema():
    check = schemas.compile_schema({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}})
    errors = []
    check({"a": 1}, "data", errors)
    assert errors == ["data.a: oneOf"]


class TestCompatibility:
    OLD = {
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "string", "x-personal-data": False},
            "b": {"type": "object", "properties": {"c": {"type": "integer"}}},
        },
    }

    def changed(self, **changes):
        new = json.loads(json.dumps(self.OLD))
        for key, value in changes.items():
            new[key] = value
        return new

    def test_adding_an_optional_property_or_documentation_is_compatible(self):
        new = self.changed(properties={**self.OLD["properties"], "d": {"type": "string"}})
        new["properties"]["a"] = {"type": "string", "description": "now documented", "x-personal-data": True}
        new["properties"]["b"] = {"type": "object", "properties": {"c": {"type": "integer"}, "e": {}}}
        assert schemas.compatibility_problems(self.OLD, new) == []

    def test_breaking_changes_are_named(self):
        assert schemas.compatibility_problems(self.OLD, self.changed(required=["a", "b"])) == [
            "data.b: became required"
        ]
        assert schemas.compatibility_problems(
            self.OLD, self.changed(properties={"b": self.OLD["properties"]["b"]})
        ) == ["data.a: removed"]
        retyped = self.changed(properties={**self.OLD["properties"], "a": {"type": "integer"}})
        assert schemas.compatibility_problems(self.OLD, retyped) == ["data.a: type or constraints changed"]
        nested = self.changed(properties={**self.OLD["properties"], "b": {"type": "object", "properties": {}}})
        assert schemas.compatibility_problems(self.OLD, nested) == ["data.b.c: removed"]
        closed = self.changed(additionalProperties=False)
        assert schemas.compatibility_problems(self.OLD, closed) == ["data: additional properties no longer allowed"]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git history")
@pytest.mark.parametrize("event_type", [*schemas.event_types(), schemas.ENVELOPE])
def test_schema_changes_within_a_version_are_backward_compatible(event_type):
    """Every committed revision of a schema file, and the working copy, only added optional fields.

    A breaking change needs a new file `<name>.v<N+1>.json` (a new event type), not an edit.
    """
    path = schemas.schema_for(event_type).path.relative_to(ROOT)
    revisions = _git("log", "--format=%H", "--", str(path)).split()
    versions = [json.loads(_git("show", f"{commit}:{path}")) for commit in reversed(revisions)]
    versions.append(json.loads((ROOT / path).read_text()))
    problems = []
    for older, newer in itertools.pairwise(versions):
        problems += schemas.compatibility_problems(older, newer)
    assert problems == [], f"{path}: {problems}; publish a new version instead"


@pytest.mark.django_db
def test_the_contract_check_fails_for_an_unknown_type_or_invalid_data():
    fine = OutboxEvent(
        event_type="customer.updated.v1", source="s", subject="x", data={"customer_id": ORDER["customer_id"]}
    )
    unknown = OutboxEvent(event_type="customer.mystery.v1", source="s", subject="x", data={})
    invalid = OutboxEvent(event_type="customer.updated.v1", source="s", subject="x", data={"version": 0})
    assert contract_problems([fine]) == []
    assert contract_problems([unknown, invalid]) == [
        "customer.mystery.v1: no schema for customer.mystery.v1 (add event_schemas/customer.mystery.v1.json)",
        "customer.updated.v1: data.customer_id: required",
        "customer.updated.v1: data.version: minimum",
    ]
