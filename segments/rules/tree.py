"""Rule trees: validated with a path to every bad node, compiled to one SQL predicate and a score.

A tree is `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` or a condition
`{"field": ..., "op": ..., "value": ..., "weight": ...}`. A condition's optional `weight` adds to
the member's score when the condition holds (wherever it sits in the tree).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Case, DecimalField, Q, Value, When
from django.utils import timezone

from segments.errors import InvalidSegmentRules
from segments.rules.fields import OPERATORS, Context, Field, RuleError, _number, field_for

MAX_DEPTH = 10
MAX_CONDITIONS = 100
MAX_CHILDREN = 50
MAX_WEIGHT = Decimal("10000")
CONDITION_KEYS = frozenset({"field", "op", "value", "weight"})
ROOT = "rules"
SCORE_FIELD = DecimalField(max_digits=12, decimal_places=2)


@dataclass
class Condition:
    path: str
    field: Field
    op: str
    value: Any
    weight: Decimal | None


@dataclass
class Group:
    path: str
    kind: str  # all | any | not
    children: list = field(default_factory=list)


Node = Condition | Group


@dataclass
class ParsedRules:
    root: Node

    def conditions(self) -> Iterator[Condition]:
        stack = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Condition):
                yield node
            else:
                stack.extend(reversed(node.children))

    def codes(self, field_name: str) -> dict[str, str]:
        """Codes named by conditions on `field_name` (consent, segments) → the path of the first naming it."""
        found: dict[str, str] = {}
        for condition in self.conditions():
            if condition.field.name == field_name:
                values = condition.value if isinstance(condition.value, list) else [condition.value]
                for code in values:
                    found.setdefault(code, f"{condition.path}.value")
        return found


class _Parser:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.conditions = 0

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def parse(self, node: Any, path: str, depth: int) -> Node | None:
        if depth > MAX_DEPTH:
            self.fail(path, f"Rules nest at most {MAX_DEPTH} levels deep.")
            return None
        if not isinstance(node, dict):
            self.fail(path, 'Must be an object: {"all": [...]}, {"any": [...]}, {"not": {...}} or a condition.')
            return None
        groups = [key for key in ("all", "any", "not") if key in node]
        if groups:
            if len(node) != 1:
                self.fail(path, f"A {groups[0]!r} node holds only that key; found: {', '.join(sorted(node))}.")
                return None
            kind = groups[0]
            return self._group(kind, node[kind], f"{path}.{kind}", depth)
        unknown = set(node) - CONDITION_KEYS
        if unknown:
            self.fail(path, f"Unknown keys: {', '.join(sorted(unknown))}.")
            return None
        return self._condition(node, path)

    def _group(self, kind: str, children: Any, path: str, depth: int) -> Group | None:
        if kind == "not":
            child = self.parse(children, path, depth + 1)
            return Group(path, kind, [child]) if child is not None else None
        if not isinstance(children, list) or not children:
            self.fail(path, f"{kind!r} takes a non-empty list of rules.")
            return None
        if len(children) > MAX_CHILDREN:
            self.fail(path, f"At most {MAX_CHILDREN} rules in one {kind!r}.")
            return None
        parsed = [self.parse(child, f"{path}[{index}]", depth + 1) for index, child in enumerate(children)]
        if any(child is None for child in parsed):
            return None
        return Group(path, kind, parsed)

    def _condition(self, node: dict, path: str) -> Condition | None:
        self.conditions += 1
        if self.conditions == MAX_CONDITIONS + 1:
            self.fail(path, f"At most {MAX_CONDITIONS} conditions in one segment.")
        if "field" not in node or "op" not in node:
            self.fail(path, "A condition needs 'field' and 'op'.")
            return None
        spec = field_for(node["field"])
        if spec is None:
            self.fail(f"{path}.field", f"Unknown field {node['field']!r}.")
            return None
        op = node["op"]
        if op not in OPERATORS:
            self.fail(f"{path}.op", f"Unknown operator {op!r}.")
            return None
        if op not in spec.operators:
            self.fail(f"{path}.op", f"{spec.name!r} does not take {op!r}; it takes: {', '.join(spec.operators)}.")
            return None
        try:
            value = spec.clean(op, node.get("value"))
        except RuleError as error:
            self.fail(f"{path}.{error.part}", error.message)
            return None
        weight = None
        if node.get("weight") is not None:
            try:
                weight = Decimal(_number(node["weight"], integer=False)).quantize(Decimal("0.01"))
            except RuleError as error:
                self.fail(f"{path}.weight", error.message)
                return None
            if abs(weight) > MAX_WEIGHT:
                self.fail(f"{path}.weight", f"Must be between -{MAX_WEIGHT} and {MAX_WEIGHT}.")
                return None
        return Condition(path, spec, op, value, weight)


def parse_rules(rules: Any) -> ParsedRules:
    """The tree's shape, fields, operators and value types; raises INVALID_SEGMENT_RULES with paths."""
    parser = _Parser()
    root = parser.parse(rules, ROOT, 1)
    if parser.errors or root is None:
        raise InvalidSegmentRules(parser.errors or {ROOT: ["Invalid rules."]})
    return ParsedRules(root)


def referenced_segment_codes(rules: Any) -> set[str]:
    """Segment codes a stored tree refers to, without validating it (for the dependency graph)."""
    found: set[str] = set()
    stack = [rules]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("field") == "segments":
                value = node.get("value")
                found.update(item for item in (value if isinstance(value, list) else [value]) if isinstance(item, str))
            else:
                stack.extend(value for key, value in node.items() if key in ("all", "any", "not"))
    return found


# ---------------------------------------------------------------- compilation


@dataclass
class CompiledRules:
    condition: Q
    score: Any  # an expression: the sum of the weights of the conditions that hold


def _compile_node(node: Node, ctx: Context) -> Q:
    if isinstance(node, Condition):
        return node.field.compile(node.op, node.value, ctx)
    compiled = [_compile_node(child, ctx) for child in node.children]
    if node.kind == "not":
        return ~compiled[0]
    combined = compiled[0]
    for part in compiled[1:]:
        combined = (combined & part) if node.kind == "all" else (combined | part)
    return combined


def compile_rules(parsed: ParsedRules, ctx: Context) -> CompiledRules:
    condition = _compile_node(parsed.root, ctx)
    score = None
    for item in parsed.conditions():
        if item.weight is None or item.weight == 0:
            continue
        term = Case(
            When(item.field.compile(item.op, item.value, ctx), then=Value(item.weight)),
            default=Value(Decimal("0")),
            output_field=SCORE_FIELD,
        )
        score = term if score is None else score + term
    return CompiledRules(condition=condition, score=score if score is not None else Value(Decimal("0"), SCORE_FIELD))


def new_context(now: datetime | None = None) -> Context:
    return Context(now=now or timezone.now())
