"""Retention policies (settings.PRIVACY_RETENTION), applied in set-based batches, with a dry run.

A dry run counts exactly what the real run would touch, using the same querysets.
"""

from __future__ import annotations

from datetime import timedelta

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Exists, OuterRef, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from customers.actor import Actor
from customers.models import Customer, CustomerOrder, CustomerStatus, OrderStatus
from privacy import exports
from privacy.models import ErasureLog

BATCH_SIZE = 1000


def inactive_customers(now=None) -> QuerySet[Customer]:
    """Customers with no order, login or activity for the configured number of years (open orders kept)."""
    now = now or timezone.now()
    cutoff = now - relativedelta(years=settings.PRIVACY_RETENTION["inactive_customer_years"])
    last_seen = Greatest(
        "registered_at",
        Coalesce("last_order_at", "registered_at"),
        Coalesce("last_login_at", "registered_at"),
        Coalesce("last_activity_at", "registered_at"),
        output_field=DateTimeField(),
    )
    open_orders = CustomerOrder.objects.filter(customer=OuterRef("pk"), status=OrderStatus.OPEN)
    return (
        Customer.objects.exclude(status=CustomerStatus.ERASED)
        .alias(last_seen=last_seen)
        .filter(last_seen__lt=cutoff)
        .exclude(Exists(open_orders))
    )


def _anonymize_inactive(actor: Actor, *, dry_run: bool) -> int:
    from privacy.services import erase_customers

    candidates = inactive_customers()
    if dry_run:
        return candidates.count()
    done = 0
    while True:
        with transaction.atomic():
            ids = list(
                candidates.order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE].select_for_update(skip_locked=True)
            )
            if not ids:
                return done
            erase_customers(actor=actor, customer_ids=ids, trigger="retention:inactive_customers")
        done += len(ids)


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
