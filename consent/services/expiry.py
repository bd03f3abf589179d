"""Expiry: grants past their validity become `expired`, in batches, idempotently.

Locks are taken in the order every other consent and preference write takes them — the customer's
row first, then its consent states, then (through `customers.services`) its preferences — so expiry
can never wait on a preference change in a cycle. Customers another transaction holds are skipped
(SKIP LOCKED) and picked up by the next run; concurrent runs therefore never collide either.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from consent.models import (
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentTrigger,
)
from consent.services._common import (
    EXPIRY_BATCH_SIZE,
    PREFERENCE_FIELD_BY_PURPOSE,
    SYSTEM_ACTOR,
    S,
    record_event,
)
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor

logger = logging.getLogger(__name__)


def consent_expire_due(
    *, actor: Actor, batch_size: int = EXPIRY_BATCH_SIZE, now: datetime | None = None, max_batches: int | None = None
) -> int:
    """Move every grant past its validity to `expired`, one transaction per batch. Idempotent:
    only grants still granted and due are picked, so a second run finds nothing to do.

    A customer whose row is locked by another transaction right now is left for the next run.
    """
    now = now or timezone.now()
    total = 0
    batches = 0
    skipped: set[UUID] = set()
    while max_batches is None or batches < max_batches:
        picked, done = _expire_batch(actor=actor, batch_size=batch_size, now=now, skipped=skipped)
        total += done
        batches += 1
        if picked < batch_size:
            break
    if total:
        logger.info("consent expiry: %s grant(s) expired", total)
    if skipped:
        logger.info("consent expiry: %s customer(s) busy, left for the next run", len(skipped))
    return total


def _due(now: datetime):
    return ConsentState.objects.filter(status=S.GRANTED, valid_until__lte=now)


@transaction.atomic
def _expire_batch(*, actor: Actor, batch_size: int, now: datetime, skipped: set[UUID]) -> tuple[int, int]:
    """Returns (states picked, states expired); picked < batch_size means nothing more is due."""
    candidates = list(
        _due(now)
        .exclude(customer_id__in=skipped)
        .order_by("valid_until", "id")
        .values_list("id", "customer_id")[:batch_size]
    )
    if not candidates:
        return 0, 0
    wanted = sorted({customer_id for _, customer_id in candidates})
    # 1. The customers' rows, in id order, skipping those another transaction holds.
    locked = set(
        customer_selectors.customers_visible_to(SYSTEM_ACTOR)
        .filter(pk__in=wanted)
        .order_by("pk")
        .select_for_update(of=("self",), skip_locked=True)
        .values_list("pk", flat=True)
    )
    skipped.update(customer_id for customer_id in wanted if customer_id not in locked)
    # 2. Their states (no consent write touches a state without holding its customer's row).
    states = list(
        _due(now)
        .filter(id__in=[state_id for state_id, _ in candidates], customer_id__in=locked)
        .select_for_update(of=("self",))
        .select_related("purpose", "policy_version")
        .order_by("customer_id", "id")
    )
    if not states:
        return len(candidates), 0
    records = [
        ConsentRecord(
            customer_id=state.customer_id,
            purpose=state.purpose,
            status=S.EXPIRED,
            previous_status=S.GRANTED,
            policy_version=state.policy_version,
            trigger=ConsentTrigger.EXPIRY,
            occurred_at=state.valid_until,  # when the grant ceased, not when we noticed
            recorded_at=now,
            source=ConsentSource.SYSTEM,
            actor=actor.label,
        )
        for state in states
    ]
    ConsentRecord.objects.bulk_create(records)
    for state, record in zip(states, records, strict=True):
        state.status = S.EXPIRED
        state.source = ConsentSource.SYSTEM
        state.granted_at = None
        state.valid_until = None
        state.updated_at = record.occurred_at
        state.last_record = record
    ConsentState.objects.bulk_update(
        states, ["status", "source", "granted_at", "valid_until", "updated_at", "last_record"]
    )
    for record in records:
        record_event(record, actor)

    # 3. The opt-in columns follow, set-based, through the customers app (history, version, event, cache).
    changes_by_customer: dict[UUID, dict[str, bool]] = {}
    for state in states:
        field = PREFERENCE_FIELD_BY_PURPOSE.get(state.purpose.code)
        if field is not None:
            changes_by_customer.setdefault(state.customer_id, {})[field] = False
    customer_services.customer_preferences_update_many(
        actor=actor, changes_by_customer=changes_by_customer, reason="consent expired"
    )
    return len(candidates), len(states)
