"""Read queries shared by the API, the admin, tasks and the calculation.

`eligible_customers()` is the one base every rule, preview, calculation and export starts from:
customers segments may hold at all (not erased, processing not restricted).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from customers.models import Customer, CustomerStatus
from customers.precompiled import PrecompiledQuery, as_uuids
from segments.errors import InvalidSegmentRules, SegmentNotFound
from segments.models import Segment, SegmentCalculation, SegmentKind, SegmentMembership, SegmentStatus
from segments.rules import Context, ParsedRules, compile_rules, parse_rules, referenced_segment_codes
from segments.rules.fields import consent_holds

MAX_OVERLAP_SEGMENTS = 10


def eligible_customers() -> QuerySet[Customer]:
    """Customers a segment may hold: not erased or merged away, processing not restricted (GDPR Art. 18)."""
    return (
        Customer.objects.exclude(status__in=(CustomerStatus.ERASED, CustomerStatus.MERGED))
        .filter(processing_restricted=False)
        .order_by()
    )


def segment_get(segment_id: UUID | str) -> Segment:
    try:
        return Segment.objects.get(pk=segment_id)
    except (Segment.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise SegmentNotFound(segment_id) from None


def segment_get_by_code(code: str) -> Segment:
    try:
        return Segment.objects.get(code=code)
    except Segment.DoesNotExist:
        raise SegmentNotFound(code) from None


def segments() -> QuerySet[Segment]:
    return Segment.objects.all()


def live_dynamic_segments() -> QuerySet[Segment]:
    """Dynamic segments kept current (by the nightly run and per-customer evaluation): all but inactive."""
    return Segment.objects.filter(kind=SegmentKind.DYNAMIC).exclude(status=SegmentStatus.INACTIVE)


def calculation_get(job_id: UUID | str) -> SegmentCalculation:
    try:
        return SegmentCalculation.objects.select_related("segment").get(pk=job_id)
    except (SegmentCalculation.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise SegmentNotFound(job_id) from None


def open_calculation(segment_id: UUID) -> SegmentCalculation | None:
    return SegmentCalculation.objects.filter(segment_id=segment_id, status__in=["queued", "running"]).first()


# ---------------------------------------------------------------- rules → customers


class Resolver:
    """Codes in rules → what they name (segment ids, consent purposes), each table read at most once."""

    def __init__(self) -> None:
        self._segments: dict[str, Any] | None = None
        self._purposes: dict[str, Any] | None = None

    def segment_ids(self) -> dict[str, Any]:
        if self._segments is None:
            self._segments = dict(Segment.objects.values_list("code", "id"))
        return self._segments

    def purposes(self) -> dict[str, Any]:
        if self._purposes is None:
            from consent import selectors as consent_selectors

            self._purposes = {purpose.code: purpose for purpose in consent_selectors.purposes()}
        return self._purposes


def rules_context(
    parsed: ParsedRules | None,
    *,
    requires_consent: str = "",
    now: datetime | None = None,
    resolver=None,
    correlated: bool = False,
) -> Context:
    """The compilation context; INVALID_SEGMENT_RULES when a code no longer names anything."""
    resolver = resolver or Resolver()
    ctx = Context(now=now or timezone.now(), correlated=correlated)
    errors: dict[str, list[str]] = {}
    if parsed is not None:
        for code, path in parsed.codes("segments").items():
            if code not in resolver.segment_ids():
                errors.setdefault(path, []).append(f"No segment {code!r}.")
            else:
                ctx.segment_ids[code] = resolver.segment_ids()[code]
        for code, path in parsed.codes("consent").items():
            if code not in resolver.purposes():
                errors.setdefault(path, []).append(f"No consent purpose {code!r}.")
            else:
                ctx.purposes[code] = resolver.purposes()[code]
    if requires_consent:
        if requires_consent not in resolver.purposes():
            errors.setdefault("requires_consent", []).append(f"No consent purpose {requires_consent!r}.")
        else:
            ctx.purposes[requires_consent] = resolver.purposes()[requires_consent]
    if errors:
        raise InvalidSegmentRules(errors)
    return ctx


def consent_condition(purpose_code: str, ctx: Context) -> Q:
    return consent_holds(ctx.purposes[purpose_code], ctx)


def membership_condition(
    parsed: ParsedRules,
    *,
    requires_consent: str = "",
    now: datetime | None = None,
    resolver=None,
    correlated: bool = False,
) -> tuple[Q, Any]:
    """The rule tree (and consent requirement) as one `Q` on customers, and the score expression.

    `correlated` compiles for a query over one customer (per-customer evaluation), the default for
    a pass over all of them (recalculation, preview).
    """
    ctx = rules_context(parsed, requires_consent=requires_consent, now=now, resolver=resolver, correlated=correlated)
    compiled = compile_rules(parsed, ctx)
    condition = compiled.condition
    if requires_consent:
        condition &= consent_condition(requires_consent, ctx)
    return condition, compiled.score


def matching_customers(
    rules: Any, *, requires_consent: str = "", now: datetime | None = None, resolver=None
) -> QuerySet[Customer]:
    """Eligible customers the rules select, annotated with `segment_score`: one SQL query."""
    parsed = rules if isinstance(rules, ParsedRules) else parse_rules(rules)
    condition, score = membership_condition(parsed, requires_consent=requires_consent, now=now, resolver=resolver)
    return eligible_customers().filter(condition).annotate(segment_score=score)


def preview(rules: Any, *, requires_consent: str = "", sample_size: int = 10) -> dict:
    """How many customers unsaved rules select now, and a few of them (highest score first)."""
    matching = matching_customers(rules, requires_consent=requires_consent)
    sample = list(
        matching.order_by("-segment_score", "-created_at").values(
            "id", "customer_number", "first_name", "last_name", "segment_score"
        )[:sample_size]
    )
    return {"count": matching.count(), "sample": sample}


# ---------------------------------------------------------------- membership


def current_memberships() -> QuerySet[SegmentMembership]:
    return SegmentMembership.objects.filter(left_at__isnull=True)


def segment_members(segment: Segment, *, consenting_only: bool = False) -> QuerySet[SegmentMembership]:
    """Current memberships of the segment; `consenting_only` drops members lacking its required consent."""
    members = current_memberships().filter(segment=segment).select_related("customer")
    if consenting_only and segment.requires_consent:
        from consent import selectors as consent_selectors

        members = members.filter(customer__in=consent_selectors.customers_consenting_to(segment.requires_consent))
    return members.filter(customer__in=eligible_customers())


def customer_memberships(customer_id: UUID | str) -> QuerySet[SegmentMembership]:
    return current_memberships().filter(customer_id=customer_id).select_related("segment").order_by("segment__name")


def customer_membership_history(customer_id: UUID | str) -> QuerySet[SegmentMembership]:
    return SegmentMembership.objects.filter(customer_id=customer_id).select_related("segment")


def _overlap_sql(count: int) -> str:
    """How many customers hold each combination of the segments (bit n: the n-th segment), in one pass:
    each segment's open memberships come from the (segment, customer) index in customer order, so the
    streams merge without a sort and each customer's combination is grouped as it goes by."""
    branches = " UNION ALL ".join(
        f"(SELECT customer_id, {1 << n} AS bit FROM segments_segmentmembership"  # noqa: S608 - a number
        " WHERE segment_id = %s AND left_at IS NULL ORDER BY customer_id)"
        for n in range(count)
    )
    return f"""
    SELECT bits, count(*) FROM (
        SELECT bit_or(bit) AS bits FROM ({branches} ORDER BY customer_id) AS m GROUP BY customer_id
    ) AS per_customer
    GROUP BY bits"""  # noqa: S608 - generated from a count; the segment ids are parameters


def segments_overlap(segment_ids: Iterable[UUID]) -> dict:
    """Current members of each segment and of each pair, in one statement that reads each segment's
    members once (however many segments: up to MAX_OVERLAP_SEGMENTS)."""
    ids = list(dict.fromkeys(segment_ids))
    if len(ids) > MAX_OVERLAP_SEGMENTS:  # callers validate; never answer for fewer than asked
        raise ValueError(f"At most {MAX_OVERLAP_SEGMENTS} segments, not {len(ids)}.")
    if not ids:
        return {"sizes": {}, "pairs": {}}
    from segments.calculation import tune_transaction

    with transaction.atomic():
        tune_transaction()
        with connection.cursor() as cursor:
            # The planner cannot know how few combinations there are (it guesses 200 customers):
            # without this it sorts every customer's combination to count them instead of hashing.
            cursor.execute("SELECT set_config('enable_sort', 'off', true)")
            cursor.execute(_overlap_sql(len(ids)), ids)
            combinations_held = cursor.fetchall()
    sizes = dict.fromkeys(ids, 0)
    pairs = {pair: 0 for pair in itertools.combinations(ids, 2)}
    for bits, customers in combinations_held:
        held = [segment_id for n, segment_id in enumerate(ids) if bits >> n & 1]
        for segment_id in held:
            sizes[segment_id] += customers
        for pair in itertools.combinations(held, 2):
            pairs[pair] += customers
    return {"sizes": sizes, "pairs": pairs}


# ---------------------------------------------------------------- the dependency graph


def dependency_graph() -> dict[str, set[str]]:
    """Segment code → codes its rules refer to ("in segment Y")."""
    return {
        code: referenced_segment_codes(rules)
        for code, rules in Segment.objects.filter(kind=SegmentKind.DYNAMIC).values_list("code", "rules")
    }


def find_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start → … → start through the graph, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in sorted(graph.get(node, ())):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def dependents(code: str) -> list[Segment]:
    """Live dynamic segments whose rules refer to `code`, directly or through others, in calculation order."""
    graph = dependency_graph()
    affected: set[str] = set()
    frontier = {code}
    while frontier:
        frontier = {name for name, refs in graph.items() if refs & frontier} - affected
        affected |= frontier
    segments_by_code = {segment.code: segment for segment in live_dynamic_segments().filter(code__in=affected)}
    return [
        segments_by_code[name]
        for level in evaluation_levels(graph, affected)
        for name in level
        if name in segments_by_code
    ]


def evaluation_levels(graph: dict[str, set[str]], codes: Iterable[str]) -> list[list[str]]:
    """`codes` in levels: a segment comes after every segment (among `codes`) its rules refer to."""
    remaining = set(codes)
    levels: list[list[str]] = []
    while remaining:
        level = sorted(code for code in remaining if not (graph.get(code, set()) & remaining))
        if not level:  # a cycle slipped in (validation refuses them): evaluate the rest together
            level = sorted(remaining)
        levels.append(level)
        remaining -= set(level)
    return levels


# ---------------------------------------------------------------- tiers


def _tier_facts(customer_ids: list) -> QuerySet:
    from segments import tiers

    return (
        Customer.objects.filter(pk__in=customer_ids)
        .values("id", *tiers.CRITERIA, "segment_tier__tier", "segment_tier__reached_at")
        .order_by()
    )


# It runs on every uncached read of a customer.
_tier_facts_query = PrecompiledQuery(_tier_facts, customer_ids=[UUID])


def customer_tiers(customer_ids: list) -> dict:
    """Customer id → tier summary (tier, reached_at, qualifications, progress), in one query."""
    if not customer_ids:
        return {}
    from segments import tiers

    return {
        row["id"]: tiers.summary(row, stored_tier=row["segment_tier__tier"], reached_at=row["segment_tier__reached_at"])
        for row in _tier_facts_query.dicts(customer_ids=as_uuids(customer_ids))
    }
