"""The fields a segment rule may test, what each accepts, and the SQL (`Q`) each compiles to.

Every condition compiles to a predicate that is TRUE or FALSE for every customer, never NULL, so
`not` is the exact complement of its child. Negative operators (`neq`, `not_in`, `not_contains`)
are complements too: a customer without a value (no date of birth, no default shipping address,
no such custom attribute) matches `neq`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import BooleanField, CharField, Count, Exists, F, Func, JSONField, OuterRef, Q, Subquery, Value
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce, Lower
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IContains,
    In,
    IStartsWith,
    LessThan,
    LessThanOrEqual,
)
from django.utils.dateparse import parse_date, parse_datetime

OPERATORS = (
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "starts_with",
    "exists",
    "missing",
    "within_last_days",
    "more_than_days_ago",
)
COMPARE = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in")
PRESENCE = ("exists", "missing")
RECENCY = ("within_last_days", "more_than_days_ago")
TEXT_MATCH = ("contains", "not_contains", "starts_with")
SET_OPS = ("contains", "not_contains", "in", "not_in")
MAX_LIST = 500
MAX_DAYS = 36500


class RuleError(Exception):
    """A bad condition; `part` names the key of the condition at fault (field, op or value)."""

    def __init__(self, message: str, part: str = "value") -> None:
        super().__init__(message)
        self.message = message
        self.part = part


@dataclass
class Context:
    """What compilation needs besides the tree: the clock and the ids behind codes."""

    now: datetime
    segment_ids: dict[str, Any] = field(default_factory=dict)  # code -> id
    purposes: dict[str, Any] = field(default_factory=dict)  # code -> consent purpose
    # True when the query evaluates a handful of customers (per-customer evaluation): subqueries are
    # then correlated (an index lookup per customer) instead of set-based (one pass over the table).
    correlated: bool = False

    @property
    def today(self) -> date:
        return self.now.astimezone(UTC).date()


# ---------------------------------------------------------------- value checks


def _number(value: Any, *, integer: bool) -> int | Decimal:
    if isinstance(value, bool) or value is None:
        raise RuleError("Must be a number.")
    if integer:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RuleError("Must be a whole number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise RuleError("Must be a finite number.")
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise RuleError("Must be a number.") from None
        if not number.is_finite():
            raise RuleError("Must be a finite number.")
        return number
    raise RuleError("Must be a number.")


def _list(value: Any, check) -> list:
    if not isinstance(value, list) or not value:
        raise RuleError("Must be a non-empty list.")
    if len(value) > MAX_LIST:
        raise RuleError(f"At most {MAX_LIST} values.")
    return [check(item) for item in value]


def _pair(value: Any, check) -> tuple:
    if not isinstance(value, list) or len(value) != 2:
        raise RuleError("Must be a list of two values: [low, high].")
    low, high = check(value[0]), check(value[1])
    if low > high:
        raise RuleError("The low end is above the high end.")
    return low, high


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RuleError("Must be a non-empty string.")
    if len(value) > 200:
        raise RuleError("At most 200 characters.")
    return value.strip()


def _nothing(value: Any) -> None:
    if value not in (None, True):
        raise RuleError("Takes no value.")


def _days(value: Any) -> int:
    days = _number(value, integer=True)
    if not 0 <= days <= MAX_DAYS:
        raise RuleError(f"Must be between 0 and {MAX_DAYS} days.")
    return days


def _moment(value: Any) -> datetime:
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        day = parse_date(value)
        if day is not None:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    raise RuleError("Must be an ISO 8601 date or date-time, e.g. 2025-01-31.")


def _holds(actual, op: str, value) -> bool:
    """Whether a plain Python value satisfies a comparison (used for 'no orders' = 0)."""
    return {
        "eq": lambda: actual == value,
        "neq": lambda: actual != value,
        "gt": lambda: actual > value,
        "gte": lambda: actual >= value,
        "lt": lambda: actual < value,
        "lte": lambda: actual <= value,
        "between": lambda: value[0] <= actual <= value[1],
        "in": lambda: actual in value,
        "not_in": lambda: actual not in value,
    }[op]()


NEVER = Q(Value(False, output_field=BooleanField()))


def any_of(predicates) -> Q:
    combined = None
    for predicate in predicates:
        combined = predicate if combined is None else combined | predicate
    return NEVER if combined is None else combined


def compare_expression(expression, op: str, value) -> Q:
    """A comparison on an expression that is never NULL (e.g. a coalesced count)."""
    lookups = {"gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}
    if op in lookups:
        return Q(lookups[op](expression, value))
    if op == "between":
        return Q(GreaterThanOrEqual(expression, value[0])) & Q(LessThanOrEqual(expression, value[1]))
    matches = Q(Exact(expression, value)) if op in ("eq", "neq") else Q(In(expression, list(value)))
    return ~matches if op in ("neq", "not_in") else matches


def compare(column: str, op: str, value) -> Q:
    """A comparison on a column (or annotation) by Django lookups, so negation handles NULLs."""
    if op == "eq":
        return Q(**{column: value})
    if op == "neq":
        return ~Q(**{column: value})
    if op in ("gt", "gte", "lt", "lte"):
        return Q(**{f"{column}__{op}": value})
    if op == "between":
        return Q(**{f"{column}__gte": value[0], f"{column}__lte": value[1]})
    if op == "in":
        return Q(**{f"{column}__in": value})
    if op == "not_in":
        return ~Q(**{f"{column}__in": value})
    if op == "exists":
        return Q(**{f"{column}__isnull": False})
    if op == "missing":
        return Q(**{f"{column}__isnull": True})
    raise AssertionError(op)


# ---------------------------------------------------------------- field kinds


class Field:
    name: str
    group: str
    type: str
    description: str
    operators: tuple[str, ...]
    choices: tuple[str, ...] = ()

    def clean(self, op: str, value: Any) -> Any:
        raise NotImplementedError

    def compile(self, op: str, value: Any, ctx: Context) -> Q:
        raise NotImplementedError

    def describe(self) -> dict:
        described = {
            "field": self.name,
            "group": self.group,
            "type": self.type,
            "operators": list(self.operators),
            "description": self.description,
        }
        if self.choices:
            described["choices"] = list(self.choices)
        return described


class NumberField(Field):
    def __init__(self, name, column, *, group, description, integer=True, nullable=False):
        self.name, self.column, self.group, self.description = name, column, group, description
        self.integer, self.nullable = integer, nullable
        self.type = "integer" if integer else "decimal"
        self.operators = COMPARE + (PRESENCE if nullable else ())

    def clean(self, op, value):
        if op in PRESENCE:
            return _nothing(value)
        one = lambda item: _number(item, integer=self.integer)  # noqa: E731
        if op == "between":
            return _pair(value, one)
        if op in ("in", "not_in"):
            return _list(value, one)
        return one(value)

    def compile(self, op, value, ctx):
        return compare(self.column, op, value)


class AgeField(Field):
    """Whole years since the date of birth, compiled to date-of-birth ranges (no per-row arithmetic)."""

    name, group, type = "age", "profile", "integer"
    description = "Age in whole years, from the date of birth"
    operators = COMPARE + PRESENCE

    def clean(self, op, value):
        if op in PRESENCE:
            return _nothing(value)

        def one(item):
            age = _number(item, integer=True)
            if not 0 <= age <= 150:
                raise RuleError("Must be an age between 0 and 150.")
            return age

        if op == "between":
            return _pair(value, one)
        if op in ("in", "not_in"):
            return _list(value, one)
        return one(value)

    @staticmethod
    def _years_before(day: date, years: int) -> date:
        try:
            return day.replace(year=day.year - years)
        except ValueError:  # 29 February in a year without one
            return day.replace(year=day.year - years, day=28)

    def _at_least(self, age: int, ctx) -> Q:
        return Q(date_of_birth__lte=self._years_before(ctx.today, age))

    def _at_most(self, age: int, ctx) -> Q:
        return Q(date_of_birth__gt=self._years_before(ctx.today, age + 1))

    def _exactly(self, age: int, ctx) -> Q:
        return self._at_least(age, ctx) & self._at_most(age, ctx)

    def compile(self, op, value, ctx):
        if op in PRESENCE:
            return compare("date_of_birth", op, value)
        if op == "gte":
            return self._at_least(value, ctx)
        if op == "gt":
            return self._at_least(value + 1, ctx)
        if op == "lte":
            return self._at_most(value, ctx)
        if op == "lt":
            return self._at_most(value - 1, ctx) if value > 0 else NEVER
        if op == "between":
            return self._at_least(value[0], ctx) & self._at_most(value[1], ctx)
        if op == "eq":
            return self._exactly(value, ctx)
        if op == "neq":
            return ~self._exactly(value, ctx)
        matches = any_of(self._exactly(age, ctx) for age in value)
        return matches if op == "in" else ~matches


class DateTimeField(Field):
    type = "datetime"

    def __init__(self, name, column, *, group, description, nullable=True):
        self.name, self.column, self.group, self.description, self.nullable = name, column, group, description, nullable
        self.operators = ("gt", "gte", "lt", "lte", "between", *RECENCY) + (PRESENCE if nullable else ())

    def clean(self, op, value):
        if op in PRESENCE:
            return _nothing(value)
        if op in RECENCY:
            return _days(value)
        if op == "between":
            return _pair(value, _moment)
        return _moment(value)

    def compile(self, op, value, ctx):
        if op == "within_last_days":
            return Q(**{f"{self.column}__gte": ctx.now - timedelta(days=value)})
        if op == "more_than_days_ago":
            return Q(**{f"{self.column}__lt": ctx.now - timedelta(days=value)})
        return compare(self.column, op, value)


class ChoiceField(Field):
    type = "choice"
    operators = ("eq", "neq", "in", "not_in")

    def __init__(self, name, column, choices, *, group, description):
        self.name, self.column, self.choices, self.group, self.description = (
            name,
            column,
            tuple(choices),
            group,
            description,
        )

    def clean(self, op, value):
        def one(item):
            if item not in self.choices:
                raise RuleError(f"Must be one of: {', '.join(self.choices)}.")
            return item

        return _list(value, one) if op in ("in", "not_in") else one(value)

    def compile(self, op, value, ctx):
        return compare(self.column, op, value)


class TextField(Field):
    """Free text compared case-insensitively."""

    type = "text"
    operators = ("eq", "neq", "in", "not_in", *TEXT_MATCH, *PRESENCE)

    def __init__(self, name, column, *, group, description):
        self.name, self.column, self.group, self.description = name, column, group, description

    def clean(self, op, value):
        if op in PRESENCE:
            return _nothing(value)
        return _list(value, _text) if op in ("in", "not_in") else _text(value)

    def positive(self, op: str, value) -> tuple[Q, bool]:
        """The predicate on the column and whether the operator is its complement."""
        column = self.column
        if op in ("eq", "neq"):
            return Q(**{f"{column}__iexact": value}), op == "neq"
        if op in ("in", "not_in"):
            return Q(In(Lower(F(column)), sorted({item.lower() for item in value}))), op == "not_in"
        if op in ("contains", "not_contains"):
            return Q(**{f"{column}__icontains": value}), op == "not_contains"
        if op == "starts_with":
            return Q(**{f"{column}__istartswith": value}), False
        return ~Q(**{column: ""}), op == "missing"  # exists / missing

    def compile(self, op, value, ctx):
        predicate, negated = self.positive(op, value)
        return ~predicate if negated else predicate


class AddressField(TextField):
    """A field of the customer's default shipping address (absent when they have none)."""

    group = "profile"

    def __init__(self, name, column, *, description, upper=False):
        super().__init__(name, column, group="profile", description=description)
        self.upper = upper

    def clean(self, op, value):
        cleaned = super().clean(op, value)
        if self.upper and cleaned is not None:
            cleaned = [item.upper() for item in cleaned] if isinstance(cleaned, list) else cleaned.upper()
        return cleaned

    def compile(self, op, value, ctx):
        from addresses import selectors as address_selectors

        predicate, negated = self.positive(op, value)
        defaults = address_selectors.addresses_active().filter(customer_id=OuterRef("pk"), is_default_shipping=True)
        found = Q(Exists(defaults.filter(predicate)))
        return ~found if negated else found


class TagsField(Field):
    name, group, type = "tags", "profile", "tags"
    description = "The customer's tags (exact, case-sensitive); in = has any of, not_in = has none of"
    operators = (*SET_OPS, *PRESENCE)

    def clean(self, op, value):
        if op in PRESENCE:
            return _nothing(value)
        return _list(value, _text) if op in ("in", "not_in") else _text(value)

    def compile(self, op, value, ctx):
        if op == "contains":
            return Q(tags__contains=[value])
        if op == "not_contains":
            return ~Q(tags__contains=[value])
        if op == "in":
            return Q(tags__overlap=value)
        if op == "not_in":
            return ~Q(tags__overlap=value)
        return ~Q(tags=[]) if op == "exists" else Q(tags=[])


_CODE = re.compile(r"^[a-z][a-z0-9_]{1,49}$")


def _code(value: Any) -> str:
    if not isinstance(value, str) or not _CODE.match(value):
        raise RuleError("Must be a code: lower-case letters, digits and underscores.")
    return value


class CodeSetField(Field):
    """A set of codes the customer holds: contains X, not_contains X, in [any of], not_in [none of]."""

    type = "codes"
    operators = SET_OPS

    def clean(self, op, value):
        return _list(value, _code) if op in ("in", "not_in") else _code(value)

    @staticmethod
    def codes(op: str, value) -> list[str]:
        return list(value) if op in ("in", "not_in") else [value]

    def holds_one(self, code: str, ctx: Context) -> Q:
        raise NotImplementedError

    def compile(self, op, value, ctx):
        matches = any_of(self.holds_one(code, ctx) for code in self.codes(op, value))
        return ~matches if op in ("not_contains", "not_in") else matches


class ConsentField(CodeSetField):
    name, group = "consent", "consent"
    description = "Consent purposes the customer has validly granted now, e.g. contains marketing_email"

    def holds_one(self, code, ctx):
        return consent_holds(ctx.purposes[code], ctx)


def consent_holds(purpose, ctx: Context) -> Q:
    """The customer holds a valid grant for the purpose now (consent's one answer to that question)."""
    from consent import selectors as consent_selectors

    consenting = consent_selectors.consenting_customer_ids(purpose, at=ctx.now)
    if ctx.correlated:
        return Q(Exists(consenting.filter(customer_id=OuterRef("pk"))))
    return Q(pk__in=consenting)


class MembershipField(CodeSetField):
    name, group = "segments", "membership"
    description = "Segments (by code) the customer is currently a member of"

    def holds_one(self, code, ctx):
        from segments.models import SegmentMembership

        return Q(
            Exists(
                SegmentMembership.objects.filter(
                    customer_id=OuterRef("pk"), segment_id=ctx.segment_ids[code], left_at__isnull=True
                )
            )
        )


class RecentOrdersField(Field):
    """Orders (open or completed) placed in the last N days, from the order rows the events keep."""

    group, type = "metrics", "integer"
    operators = COMPARE

    def __init__(self, days: int) -> None:
        self.days = days
        self.name = f"orders_last_{days}_days"
        self.description = f"Orders (open or completed) placed in the last {days} days"

    def clean(self, op, value):
        one = lambda item: _number(item, integer=True)  # noqa: E731
        if op == "between":
            return _pair(value, one)
        if op in ("in", "not_in"):
            return _list(value, one)
        return one(value)

    def compile(self, op, value, ctx):
        from customers.models import CustomerOrder, OrderStatus

        recent = CustomerOrder.objects.filter(
            status__in=[OrderStatus.OPEN, OrderStatus.COMPLETED], placed_at__gte=ctx.now - timedelta(days=self.days)
        )
        if ctx.correlated:  # count this customer's orders through the (customer, placed_at) index
            count = Coalesce(
                Subquery(
                    recent.filter(customer_id=OuterRef("pk"))
                    .order_by()
                    .values("customer_id")
                    .annotate(n=Count("order_id"))
                    .values("n")[:1]
                ),
                0,
            )
            return compare_expression(count, op, value)
        counted = recent.order_by().values("customer_id").annotate(recent_orders=Count("order_id"))
        matches = Q(pk__in=counted.filter(compare("recent_orders", op, value)).values("customer_id"))
        if _holds(0, op, value):  # customers without a recent order count as 0
            matches |= ~Q(pk__in=recent.values("customer_id"))
        return matches


_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _scalar(value: Any):
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    raise RuleError("Must be a string, number or boolean.")


def _json_number(value: Any):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleError("Must be a number.")
    return value


class CustomAttributeField(Field):
    group, type = "custom", "json"
    operators = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", *TEXT_MATCH, *PRESENCE)

    def __init__(self, key: str) -> None:
        self.key = key
        self.name = f"custom_attributes.{key}"
        self.description = f"The custom attribute {key!r}"

    def clean(self, op, value):
        if op in PRESENCE:
            return _nothing(value)
        if op in ("gt", "gte", "lt", "lte"):
            return _json_number(value)
        if op == "between":
            return _pair(value, _json_number)
        if op in ("in", "not_in"):
            return _list(value, _scalar)
        if op in TEXT_MATCH:
            return _text(value)
        return _scalar(value)

    def compile(self, op, value, ctx):
        attribute = KeyTransform(self.key, "custom_attributes")
        present = Q(custom_attributes__has_key=self.key)  # never NULL: the column is NOT NULL
        json_type = Func(attribute, function="jsonb_typeof", output_field=CharField())

        def json(item):
            return Value(item, output_field=JSONField())

        def numeric(lookup, item):
            return Q(Exact(json_type, Value("number"))) & Q(lookup(attribute, json(item)))

        if op in ("eq", "neq", "in", "not_in"):
            items = [value] if op in ("eq", "neq") else value
            matches = present & any_of(Q(Exact(attribute, json(item))) for item in items)
            return ~matches if op in ("neq", "not_in") else matches
        if op in ("gt", "gte", "lt", "lte"):
            lookup = {"gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}[op]
            return present & numeric(lookup, value)
        if op == "between":
            return present & numeric(GreaterThanOrEqual, value[0]) & Q(LessThanOrEqual(attribute, json(value[1])))
        text = KeyTextTransform(self.key, "custom_attributes")
        if op in ("contains", "not_contains"):
            matches = present & Q(Exact(json_type, Value("string"))) & Q(IContains(text, value))
            return ~matches if op == "not_contains" else matches
        if op == "starts_with":
            return present & Q(Exact(json_type, Value("string"))) & Q(IStartsWith(text, value))
        exists = present & ~Q(Exact(json_type, Value("null")))
        return exists if op == "exists" else ~exists


# ---------------------------------------------------------------- the registry


def _static_fields() -> dict[str, Field]:
    from customers.models import CustomerStatus, CustomerType, Gender, RegistrationSource

    fields: list[Field] = [
        AgeField(),
        ChoiceField("gender", "gender", Gender.values, group="profile", description="Gender"),
        ChoiceField(
            "customer_type", "customer_type", CustomerType.values, group="profile", description="Individual or business"
        ),
        ChoiceField("status", "status", CustomerStatus.values, group="profile", description="Lifecycle status"),
        ChoiceField(
            "registration_source",
            "registration_source",
            RegistrationSource.values,
            group="profile",
            description="Where the customer registered",
        ),
        TagsField(),
        DateTimeField(
            "registered_at", "registered_at", group="profile", description="When they registered", nullable=False
        ),
        TextField(
            "language", "preferences__language", group="profile", description="Preferred language (BCP 47, e.g. de-DE)"
        ),
        AddressField(
            "country", "country", description="Country (ISO alpha-2) of the default shipping address", upper=True
        ),
        AddressField("city", "city", description="City of the default shipping address"),
        NumberField("order_count", "order_count", group="metrics", description="Orders placed"),
        NumberField("total_spent", "total_spent", group="metrics", description="Total spent", integer=False),
        NumberField(
            "average_order_value",
            "average_order_value",
            group="metrics",
            description="Average order value",
            integer=False,
        ),
        DateTimeField("last_order_at", "last_order_at", group="metrics", description="When they last ordered"),
        NumberField("loyalty_points", "loyalty_points", group="metrics", description="Loyalty points"),
        NumberField(
            "satisfaction_score",
            "satisfaction_score",
            group="metrics",
            description="Satisfaction score (1-5)",
            integer=False,
            nullable=True,
        ),
        DateTimeField("last_activity_at", "last_activity_at", group="metrics", description="Last activity seen"),
        ConsentField(),
        MembershipField(),
    ]
    return {item.name: item for item in fields}


_FIELDS: dict[str, Field] | None = None
_RECENT_ORDERS = re.compile(r"^orders_last_(\d{1,4})_days$")


def static_fields() -> dict[str, Field]:
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = _static_fields()
    return _FIELDS


def field_for(name: Any) -> Field | None:
    if not isinstance(name, str):
        return None
    found = static_fields().get(name)
    if found is not None:
        return found
    if match := _RECENT_ORDERS.match(name):
        days = int(match.group(1))
        return RecentOrdersField(days) if 1 <= days <= 3650 else None
    if name.startswith("custom_attributes."):
        key = name.removeprefix("custom_attributes.")
        return CustomAttributeField(key) if _ATTRIBUTE_KEY.match(key) else None
    return None


def describe_fields() -> list[dict]:
    described = [item.describe() for item in static_fields().values()]
    described.append(
        {
            **RecentOrdersField(180).describe(),
            "field": "orders_last_<days>_days",
            "description": "Orders (open or completed) placed in the last <days> days (1-3650)",
        }
    )
    described.append({**CustomAttributeField("key").describe(), "field": "custom_attributes.<key>"})
    return described
