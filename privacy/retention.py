"""Retention policies (settings.PRIVACY_RETENTION), applied in set-based batches, with a dry run.

A dry run counts exactly what the real run would touch, using the same querysets.
"""

from __future__ import annotations

from datetime import timedelta

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from customers.actor import Actor
from customers.models import Customer, CustomerStatus
from privacy import exports
from privacy.models import ErasureLog

BATCH_SIZE = 1000


def inactive_customers(now=None) -> QuerySet[Customer]:
    """Customers with no order, login or activity for the configured number of years (holds not applied)."""
    now = now or timezone.now()
    cutoff = now - relativedelta(years=settings.PRIVACY_RETENTION["inactive_customer_years"])
    last_seen = Greatest(
        "registered_at",
        Coalesce("last_order_at", "registered_at"),
        Coalesce("last_login_at", "registered_at"),
        Coalesce("last_activity_at", "registered_at"),
        output_field=DateTimeField(),
    )
    customers = Customer.objects.exclude(status=CustomerStatus.ERASED)
    return customers.alias(last_seen=last_seen).filter(last_seen__lt=cutoff)


def _batches(candidates: QuerySet[Customer], per_customer: list):
    """Ids in pk order, BATCH_SIZE at a time (keyset: held customers never come round again)."""
    last = None
    while True:
        page = candidates.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:BATCH_SIZE])
        if not ids:
            return
        last = ids[-1]
        if per_customer:
            ids = [pk for pk in ids if not any(check(pk) for check in per_customer)]
        yield ids


def erasable_inactive_customers(now=None) -> tuple[QuerySet[Customer], list]:
    """Inactive customers that no configured hold check (settings.PRIVACY_ERASURE_HOLD_CHECKS) keeps."""
    from privacy.services import exclude_held

    return exclude_held(inactive_customers(now))


def _anonymize_inactive(actor: Actor, *, dry_run: bool) -> int:
    from privacy.services import erase_customers

    candidates, per_customer = erasable_inactive_customers()
    if dry_run:
        if not per_customer:
            return candidates.count()
        return sum(len(ids) for ids in _batches(candidates, per_customer))
    done = 0
    for batch in _batches(candidates, per_customer):
        if not batch:
            continue
        with transaction.atomic():
            ids = list(
                candidates.filter(pk__in=batch).order_by("pk").select_for_update(skip_locked=True).values_list(
                    "pk", flat=True
                )
            )
            if ids:
                erase_customers(actor=actor, customer_ids=ids, trigger="retention:inactive_customers")
        done += len(ids)
    return done


def _purge_deleted_addresses(actor: Actor, *, dry_run: bool) -> int:
    from addresses import services as address_services

    before = timezone.now() - timedelta(days=settings.PRIVACY_RETENTION["deleted_address_days"])
    return address_services.addresses_purge_deleted(deleted_before=before, dry_run=dry_run)


def _purge_old_activity(actor: Actor, *, dry_run: bool) -> int:
    from customers import services as customer_services

    before = timezone.now() - relativedelta(months=settings.PRIVACY_RETENTION["activity_months"])
    return customer_services.activity_prune(before=before, dry_run=dry_run)


def _purge_exports(actor: Actor, *, dry_run: bool) -> int:
    return exports.purge_expired_exports(dry_run=dry_run)


POLICIES = {
    "inactive_customers": _anonymize_inactive,
    "deleted_addresses": _purge_deleted_addresses,
    "expired_exports": _purge_exports,
    "old_activity": _purge_old_activity,
}


def apply_retention(*, actor: Actor, dry_run: bool = False) -> dict[str, int]:
    counts = {}
    for name, policy in POLICIES.items():
        counts[name] = policy(actor, dry_run=dry_run)
        if not dry_run and counts[name] and name != "inactive_customers":  # erasure batches log themselves
            ErasureLog.objects.create(
                trigger=f"retention:{name}", performed_by=actor.label, counts={name: counts[name]}
            )
    return counts
