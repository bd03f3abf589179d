"""Segment rules: the fields and operators (`fields`), the tree, its validation and compilation (`tree`)."""

from segments.rules.fields import OPERATORS, Context, describe_fields, field_for
from segments.rules.tree import (
    CompiledRules,
    ParsedRules,
    compile_rules,
    new_context,
    parse_rules,
    referenced_segment_codes,
)

__all__ = [
    "OPERATORS",
    "CompiledRules",
    "Context",
    "ParsedRules",
    "compile_rules",
    "describe_fields",
    "field_for",
    "new_context",
    "parse_rules",
    "referenced_segment_codes",
]
