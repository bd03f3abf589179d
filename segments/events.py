"""Segments' domain events and their payloads.

Per-member events (`assigned`, `removed`) have the customer as subject; a full recalculation also
records one `recalculated` event with the segment as subject. Payloads carry ids, codes and
scores, no personal data. A full recalculation writes its per-member events set-based (one
`INSERT ... SELECT` into the outbox, same envelope, see `segments.calculation`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

SEGMENT_ASSIGNED = "customer.segment.assigned.v1"
SEGMENT_REMOVED = "customer.segment.removed.v1"
SEGMENT_RECALCULATED = "customer.segment.recalculated.v1"
TIER_CHANGED = "customer.tier.changed.v1"

# Why a member left (`data.reason` of customer.segment.removed.v1).
LEFT_RULES = "rules"  # no longer matches the segment's rules
LEFT_MANUAL = "manual"  # removed by hand, API or CSV
LEFT_CONSENT = "consent"  # lacks the consent the segment requires
LEFT_SEGMENT_DELETED = "segment_deleted"
LEFT_ERASED = "erased"


def assigned_payload(
    *, customer_id: object, segment_id: object, segment_code: str, source: str, score: Decimal, joined_at: datetime
) -> dict:
    return {
        "customer_id": str(customer_id),
        "segment_id": str(segment_id),
        "segment_code": segment_code,
        "source": source,
        "score": float(score),
        "joined_at": joined_at.isoformat(),
    }


def removed_payload(
    *, customer_id: object, segment_id: object, segment_code: str, source: str, reason: str, left_at: datetime
) -> dict:
    return {
        "customer_id": str(customer_id),
        "segment_id": str(segment_id),
        "segment_code": segment_code,
        "source": source,
        "reason": reason,
        "left_at": left_at.isoformat(),
    }


def recalculated_payload(*, segment, job, joined: int, left: int, rescored: int, member_count: int) -> dict:
    return {
        "segment_id": str(segment.id),
        "segment_code": segment.code,
        "job_id": str(job.id),
        "trigger": job.trigger,
        "joined": joined,
        "left": left,
        "rescored": rescored,
        "member_count": member_count,
        "calculated_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def tier_changed_payload(
    *, customer_id: object, from_tier: str | None, to_tier: str, reached_at: datetime, qualifications: dict
) -> dict:
    return {
        "customer_id": str(customer_id),
        "from_tier": from_tier,
        "to_tier": to_tier,
        "reached_at": reached_at.isoformat(),
        "qualifications": qualifications,
    }
