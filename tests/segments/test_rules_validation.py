"""A bad rule tree is refused when saved, with an error that points at the bad node."""

import pytest

from segments import services
from segments.errors import InvalidSegmentRules
from segments.rules import parse_rules
from tests.segments.conftest import SYSTEM, make_segment

pytestmark = pytest.mark.django_db


def errors_of(rules, **kwargs) -> dict:
    with pytest.raises(InvalidSegmentRules) as caught:
        services.segment_validate_rules(rules, **kwargs)
    assert caught.value.code == "INVALID_SEGMENT_RULES"
    return caught.value.errors


@pytest.mark.parametrize(
    ("rules", "path", "message"),
    [
        ({"field": "shoe_size", "op": "eq", "value": 42}, "rules.field", "Unknown field 'shoe_size'"),
        ({"field": "order_count", "op": "roughly", "value": 1}, "rules.op", "Unknown operator 'roughly'"),
        ({"field": "order_count", "op": "contains", "value": 1}, "rules.op", "does not take 'contains'"),
        ({"field": "order_count", "op": "gt", "value": "many"}, "rules.value", "whole number"),
        ({"field": "order_count", "op": "gt", "value": True}, "rules.value", "number"),
        ({"field": "order_count", "op": "gt"}, "rules.value", "number"),
        ({"field": "total_spent", "op": "gt", "value": "1e400x"}, "rules.value", "number"),
        ({"field": "order_count", "op": "between", "value": [5, 1]}, "rules.value", "low end"),
        ({"field": "order_count", "op": "between", "value": [5]}, "rules.value", "two values"),
        ({"field": "order_count", "op": "in", "value": []}, "rules.value", "non-empty list"),
        ({"field": "gender", "op": "eq", "value": "robot"}, "rules.value", "one of"),
        ({"field": "last_order_at", "op": "gt", "value": "yesterday"}, "rules.value", "ISO 8601"),
        ({"field": "last_order_at", "op": "within_last_days", "value": -1}, "rules.value", "between 0"),
        ({"field": "last_order_at", "op": "eq", "value": "2025-01-01"}, "rules.op", "does not take 'eq'"),
        ({"field": "registered_at", "op": "missing"}, "rules.op", "does not take 'missing'"),
        ({"field": "age", "op": "gt", "value": 200}, "rules.value", "between 0 and 150"),
        ({"field": "tags", "op": "exists", "value": 3}, "rules.value", "no value"),
        ({"field": "custom_attributes.a b", "op": "eq", "value": 1}, "rules.field", "Unknown field"),
        ({"field": "custom_attributes.x", "op": "gt", "value": "3"}, "rules.value", "number"),
        ({"field": "custom_attributes.x", "op": "eq", "value": {"a": 1}}, "rules.value", "string, number or boolean"),
        ({"field": "orders_last_0_days", "op": "gt", "value": 1}, "rules.field", "Unknown field"),
        ({"field": "consent", "op": "contains", "value": "Bad Code"}, "rules.value", "code"),
        ({"field": "order_count", "op": "gt", "value": 1, "weight": "heavy"}, "rules.weight", "number"),
        ({"field": "order_count", "op": "gt", "value": 1, "weight": 1e9}, "rules.weight", "between"),
        ({"field": "order_count", "op": "gt", "value": 1, "extra": 1}, "rules", "Unknown keys: extra"),
        ({"op": "gt", "value": 1}, "rules", "needs 'field' and 'op'"),
        ({"all": []}, "rules.all", "non-empty list"),
        ({"all": [], "any": []}, "rules", "holds only that key"),
        ({"any": {"field": "order_count"}}, "rules.any", "non-empty list"),
        ([{"field": "order_count", "op": "gt", "value": 1}], "rules", "Must be an object"),
        ("order_count > 1", "rules", "Must be an object"),
    ],
)
def test_bad_nodes_are_named_by_path(rules, path, message):
    errors = errors_of(rules)
    assert path in errors, errors
    assert any(message in text for text in errors[path]), errors


def test_nested_paths_point_at_the_exact_node():
    rules = {
        "all": [
            {"field": "order_count", "op": "gt", "value": 1},
            {"any": [{"field": "gender", "op": "eq", "value": "female"}, {"not": {"field": "nope", "op": "eq"}}]},
            {"field": "tags", "op": "lt", "value": 1},
        ]
    }
    errors = errors_of(rules)
    assert set(errors) == {"rules.all[1].any[1].not.field", "rules.all[2].op"}


def test_depth_and_size_are_limited():
    deep = {"field": "order_count", "op": "gt", "value": 1}
    for _ in range(12):
        deep = {"not": deep}
    assert any("levels deep" in message for messages in errors_of(deep).values() for message in messages)
    wide = {"any": [{"all": [{"field": "order_count", "op": "gt", "value": n}] * 30} for n in range(4)]}
    assert any("At most 100 conditions" in message for messages in errors_of(wide).values() for message in messages)


def test_unknown_segment_and_purpose_codes():
    rules = {
        "all": [
            {"field": "segments", "op": "contains", "value": "no_such_segment"},
            {"field": "consent", "op": "in", "value": ["marketing_email", "no_such_purpose"]},
        ]
    }
    errors = errors_of(rules)
    assert errors["rules.all[0].value"] == ["No segment 'no_such_segment'."]
    assert errors["rules.all[1].value"] == ["No consent purpose 'no_such_purpose'."]
    assert "requires_consent" in errors_of({"field": "order_count", "op": "gt", "value": 1}, requires_consent="nope")


def test_a_segment_cannot_refer_to_itself():
    errors = errors_of({"field": "segments", "op": "contains", "value": "me"}, code="me")
    assert errors == {"rules.value": ["A segment cannot refer to itself."]}


def test_cycles_through_other_segments_are_refused_when_saved():
    a = make_segment({"field": "order_count", "op": "gt", "value": 1}, code="seg_a")
    make_segment({"field": "segments", "op": "contains", "value": "seg_a"}, code="seg_b")
    make_segment({"field": "segments", "op": "contains", "value": "seg_b"}, code="seg_c")
    with pytest.raises(InvalidSegmentRules) as caught:
        services.segment_update(
            actor=SYSTEM,
            segment_id=a.pk,
            changes={
                "rules": {
                    "all": [
                        {"field": "order_count", "op": "gt", "value": 1},
                        {"field": "segments", "op": "contains", "value": "seg_c"},
                    ]
                }
            },
        )
    assert caught.value.errors == {
        "rules.all[1].value": ["Segment 'seg_c' refers back to this one: seg_a → seg_c → seg_b → seg_a."]
    }
    a.refresh_from_db()
    assert a.rules == {"field": "order_count", "op": "gt", "value": 1}


def test_valid_rules_parse():
    parsed = parse_rules(
        {
            "any": [
                {"field": "order_count", "op": "gte", "value": 5, "weight": 2},
                {"not": {"field": "tags", "op": "contains", "value": "test"}},
                {"field": "custom_attributes.plan", "op": "in", "value": ["gold", 3, True]},
                {"field": "last_order_at", "op": "more_than_days_ago", "value": 90},
                {"field": "tags", "op": "exists", "value": None},
            ]
        }
    )
    assert len(list(parsed.conditions())) == 5
