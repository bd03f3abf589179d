"""The tier ladder regular → premium → vip → enterprise: thresholds, qualification, progress.

A customer holds the highest tier whose every threshold they meet. Thresholds come from
`settings.SEGMENTS_TIER_THRESHOLDS` (same shape as `DEFAULT_TIER_THRESHOLDS`; tiers or criteria
left out there keep their defaults) and apply to the customer's metrics as the order events keep
them (amounts in the customer's `spent_currency`).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from django.conf import settings

from segments.models import TIER_LADDER, Tier

CRITERIA = ("total_spent", "order_count", "average_order_value", "loyalty_points")
MONEY_CRITERIA = ("total_spent", "average_order_value")

DEFAULT_TIER_THRESHOLDS: dict[str, dict[str, Any]] = {
    Tier.PREMIUM: {"total_spent": "1000", "order_count": 5, "average_order_value": "100"},
    Tier.VIP: {"total_spent": "10000", "order_count": 20, "average_order_value": "200", "loyalty_points": 5000},
    Tier.ENTERPRISE: {"total_spent": "50000", "order_count": 100, "average_order_value": "500"},
}


def thresholds() -> dict[str, dict[str, Decimal]]:
    """Tier → criterion → minimum, defaults overlaid with the configured values."""
    configured = getattr(settings, "SEGMENTS_TIER_THRESHOLDS", None) or {}
    unknown = set(configured) - {str(tier) for tier in TIER_LADDER[1:]}
    if unknown:
        raise ValueError(f"SEGMENTS_TIER_THRESHOLDS names unknown tiers: {sorted(unknown)}")
    result: dict[str, dict[str, Decimal]] = {}
    for tier in TIER_LADDER[1:]:
        merged = {**DEFAULT_TIER_THRESHOLDS[tier], **configured.get(tier, {})}
        bad = set(merged) - set(CRITERIA)
        if bad:
            raise ValueError(f"SEGMENTS_TIER_THRESHOLDS[{tier!r}] names unknown criteria: {sorted(bad)}")
        result[str(tier)] = {name: Decimal(str(value)) for name, value in merged.items() if value is not None}
    return result


def _metric(metrics: dict, name: str) -> Decimal:
    value = metrics.get(name)
    return Decimal(str(value)) if value is not None else Decimal("0")


def qualifications(metrics: dict, table: dict | None = None) -> dict[str, dict[str, bool]]:
    """Per tier above regular: which of its thresholds the metrics meet."""
    table = table or thresholds()
    return {
        tier: {name: _metric(metrics, name) >= minimum for name, minimum in criteria.items()}
        for tier, criteria in table.items()
    }


def tier_of(metrics: dict, table: dict | None = None) -> str:
    held = qualifications(metrics, table)
    reached = str(Tier.REGULAR)
    for tier in TIER_LADDER[1:]:
        if all(held[str(tier)].values()):
            reached = str(tier)
    return reached


def next_tier(tier: str) -> str | None:
    ladder = [str(item) for item in TIER_LADDER]
    index = ladder.index(tier)
    return ladder[index + 1] if index + 1 < len(ladder) else None


def _plain(value: Decimal, name: str) -> str | int:
    return f"{value:.2f}" if name in MONEY_CRITERIA else int(value)


def progress(metrics: dict, tier: str, table: dict | None = None) -> dict:
    """How far the customer is from the tier above theirs.

    `progress` is the mean, over the next tier's thresholds, of how much of each is met (each
    capped at 100%), floored to a whole percent: 100 only when every threshold is met.
    `remaining` is the amount still to spend (total_spent) to meet that tier's spending threshold.
    """
    table = table or thresholds()
    upcoming = next_tier(tier)
    if upcoming is None:
        return {"next_tier": None, "progress": 100, "remaining": "0.00", "remaining_by_criterion": {}}
    criteria = table[upcoming]
    ratios = []
    remaining_by_criterion = {}
    for name, minimum in criteria.items():
        value = _metric(metrics, name)
        ratios.append(Decimal(1) if minimum <= 0 else min(Decimal(1), max(value, Decimal(0)) / minimum))
        remaining_by_criterion[name] = _plain(max(minimum - value, Decimal(0)), name)
    percent = math.floor(sum(ratios) / len(ratios) * 100) if ratios else 100
    spend = criteria.get("total_spent")
    remaining = max(spend - _metric(metrics, "total_spent"), Decimal(0)) if spend is not None else Decimal(0)
    return {
        "next_tier": upcoming,
        "progress": percent,
        "remaining": f"{remaining:.2f}",
        "remaining_by_criterion": remaining_by_criterion,
    }


def summary(metrics: dict, *, stored_tier: str | None, reached_at) -> dict:
    """The `tier` of the customer representation and of GET /customers/{id}/tier."""
    table = thresholds()
    tier = stored_tier or tier_of(metrics, table)
    return {
        "tier": tier,
        "reached_at": reached_at,
        "qualifications": qualifications(metrics, table),
        **progress(metrics, tier, table),
    }


# ---------------------------------------------------------------- SQL for set-based evaluation


def tier_case_sql(alias: str = "c") -> tuple[str, list]:
    """`CASE ... END` giving the tier of each row of customers_customer AS `alias`."""
    table = thresholds()
    whens, params = [], []
    for tier in reversed(TIER_LADDER[1:]):
        criteria = table[str(tier)]
        checks = " AND ".join(f"{alias}.{name} >= %s" for name in criteria) or "TRUE"
        whens.append(f"WHEN {checks} THEN %s")
        params += [*criteria.values(), str(tier)]
    return f"CASE {' '.join(whens)} ELSE %s END", [*params, str(Tier.REGULAR)]


def qualifications_sql(alias: str = "c") -> tuple[str, list]:
    """`jsonb_build_object(...)` with the qualifications of each row, as `qualifications()` builds them."""
    table = thresholds()
    tiers, params = [], []
    for tier, criteria in table.items():
        parts = ", ".join(f"%s, {alias}.{name} >= %s" for name in criteria)
        for name, minimum in criteria.items():
            params += [name, minimum]
        tiers.append(f"%s, jsonb_build_object({parts})")
        params.insert(len(params) - 2 * len(criteria), tier)
    return f"jsonb_build_object({', '.join(tiers)})", params
