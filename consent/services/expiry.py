"""Expiry: grants past their validity become `expired`, in batches, idempotently."""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from simple_history.utils import bulk_update_with_history

from consent.models import (
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentTrigger,
)
from consent.services._common import (
    EXPIRY_BATCH_SIZE,
    PREFERENCE_FIELD_BY_PURPOSE,
    S,
    record_event,
)
from customers import events as customer_events
from customers import services as customer_services
from customers.actor import Actor

# Expiry writes the preference columns set-based; customers offers no bulk preference service, so
# this is the one place consent touches a customers model directly (see `_expire_preferences`).
from customers.models import CustomerPreferences

logger = logging.getLogger(__name__)


def consent_expire_due(
    *, actor: Actor, batch_size: int = EXPIRY_BATCH_SIZE, now: datetime | None = None, max_batches: int | None = None
) -> int:
    """Move every grant past its validity to `expired`, one transaction per batch. Idempotent:
    only grants still granted and due are picked, so a second run finds nothing to do.

    Concurrent runs do not collide: each batch locks its rows with SKIP LOCKED.
    """
    now = now or timezone.now()
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        done = _expire_batch(actor=actor, batch_size=batch_size, now=now)
        total += done
        batches += 1
        if done < batch_size:
            break
    if total:
        logger.info("consent expiry: %s grant(s) expired", total)
    return total


@transaction.atomic
def _expire_batch(*, actor: Actor, batch_size: int, now: datetime) -> int:
    states = list(
        ConsentState.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("purpose", "policy_version")
        .filter(status=S.GRANTED, valid_until__lte=now)
        .order_by("valid_until", "id")[:batch_size]
    )
    if not states:
        return 0
    records = []
    for state in states:
        records.append(
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
        )
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

    # The opt-in columns follow, set-based: one UPDATE (plus one bulk history INSERT) per batch.
    fields_by_customer: dict[UUID, list[str]] = {}
    for state in states:
        field = PREFERENCE_FIELD_BY_PURPOSE.get(state.purpose.code)
        if field is not None:
            fields_by_customer.setdefault(state.customer_id, []).append(field)
    changed_by_customer = _expire_preferences(actor=actor, fields_by_customer=fields_by_customer, now=now)

    for record in records:
        record_event(record, actor)
    for customer_id, changed in changed_by_customer.items():
        customer_events.record(
            event_type=customer_events.CUSTOMER_PREFERENCES_UPDATED,
            subject=customer_id,
            data={"customer_id": str(customer_id), "changed_fields": sorted(changed)},
            actor=actor,
        )
        customer_services.customer_representation_changed(customer_id=customer_id)
    return len(states)


def _expire_preferences(
    *, actor: Actor, fields_by_customer: dict[UUID, list[str]], now: datetime
) -> dict[UUID, list[str]]:
    """Turn the expired opt-ins off with history (`bulk_update_with_history`: one UPDATE and one
    history INSERT, actor stamped). Unlike `customer_preferences_update` it does not bump the
    customer's `version`; the cached representation is dropped by the caller.
    """
    if not fields_by_customer:
        return {}
    preferences = list(CustomerPreferences.objects.select_for_update().filter(customer_id__in=list(fields_by_customer)))
    changed_by_customer: dict[UUID, list[str]] = {}
    fields: set[str] = set()
    for prefs in preferences:
        changed = [field for field in fields_by_customer[prefs.customer_id] if getattr(prefs, field)]
        if not changed:
            continue
        for field in changed:
            setattr(prefs, field, False)
        prefs.updated_at = now
        changed_by_customer[prefs.customer_id] = changed
        fields.update(changed)
    to_save = [prefs for prefs in preferences if prefs.customer_id in changed_by_customer]
    if to_save:
        bulk_update_with_history(
            to_save,
            CustomerPreferences,
            [*sorted(fields), "updated_at"],
            default_change_reason="consent expired: " + ", ".join(sorted(fields)),
            default_date=now,
            custom_historical_attrs={"history_actor": actor.label},
        )
    return changed_by_customer
