"""The customers app's part of data-subject rights, and the helpers every app uses for its own part.

Each app offers privacy two functions in its services: `export_customer_data(customer_id)` and
`erase_customers_data(customer_ids)` (set-based, for one customer or a retention batch). Which
columns are scrubbed is read from `data_classification`, so a new personal field is erased too.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import models, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Replace
from django.db.models.functions.comparison import Cast
from django.utils import timezone

from customers.cache import customer_key
from customers.data_classification import classification_of, personal_fields
from customers.models import (
    AccessLog,
    Customer,
    CustomerActivity,
    CustomerMerge,
    CustomerNote,
    CustomerPreferences,
    CustomerStatus,
    CustomerStatusChange,
    DuplicateCandidate,
    OutboxEvent,
)

ERASED_TEXT = ""


def json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def export_rows(queryset: models.QuerySet, *, exclude: tuple[str, ...] = ()) -> list[dict]:
    """Rows as JSON-ready dicts with every concrete column (foreign keys as ids)."""
    fields = [f for f in queryset.model._meta.concrete_fields if f.name not in exclude]
    return [{f.attname: json_value(getattr(row, f.attname)) for f in fields} for row in queryset]


def blank_value(field: models.Field) -> Any:
    """What a personal column holds once erased."""
    if field.null:
        return None
    if isinstance(field, models.JSONField):
        return {} if callable(field.default) and isinstance(field.default(), dict) else []
    if hasattr(field, "base_field"):  # ArrayField
        return []
    return ERASED_TEXT


def scrub_personal_fields(queryset: models.QuerySet, **overrides: Any) -> int:
    """Blank every personal column of the rows (no new history rows: a queryset update records none)."""
    model = queryset.model
    names = personal_fields(model) if classification_of(model) else frozenset()
    values = {name: blank_value(model._meta.get_field(name)) for name in names}
    values.update(overrides)
    return queryset.update(**values) if values else 0


def erased_email_expression():
    """`erased-<customer id hex>@erased.invalid`: unique, and says nothing about the person."""
    return Concat(
        Value("erased-"), Replace(Cast("id", models.CharField()), Value("-"), Value("")), Value("@erased.invalid")
    )


def export_customer_data(customer_id) -> dict:
    customer = Customer.objects.get(pk=customer_id)
    return {
        "profile": export_rows(Customer.objects.filter(pk=customer_id))[0],
        "preferences": export_rows(CustomerPreferences.objects.filter(customer_id=customer_id)),
        "status_changes": export_rows(CustomerStatusChange.objects.filter(customer_id=customer_id)),
        "orders": export_rows(customer.orders.all()),
        "support_cases": export_rows(customer.support_cases.all()),
        "activity": export_rows(CustomerActivity.objects.filter(customer_id=customer_id).order_by("occurred_at")),
        "profile_history": export_rows(Customer.history.filter(id=customer_id).order_by("history_date")),
        "preferences_history": export_rows(
            CustomerPreferences.history.filter(customer_id=customer_id).order_by("history_date")
        ),
        "events": export_rows(OutboxEvent.objects.filter(subject=str(customer_id)).order_by("occurred_at")),
        # Staff notes are personal data about the person (compliance notes included), with their history.
        "notes": export_rows(
            CustomerNote.objects.filter(customer_id=customer_id).order_by("created_at", "id"), exclude=("search",)
        ),
        "notes_history": export_rows(CustomerNote.history.filter(customer_id=customer_id).order_by("history_date")),
        # Who opened, exported or downloaded their data (staff user ids, never names).
        "access_log": export_rows(AccessLog.objects.filter(customer_id=customer_id).order_by("at", "id")),
        # Which records were merged and when; the snapshots stay out (they describe the other record too).
        "merges": export_rows(
            CustomerMerge.objects.filter(models.Q(survivor_id=customer_id) | models.Q(merged_id=customer_id))
            .order_by("merged_at"),
            exclude=("survivor_before", "merged_before", "survivor_after", "moved"),
        ),
    }


def erase_customers_data(customer_ids: list) -> dict[str, int]:
    """Anonymize the customers everywhere this app keeps their data; ids stay, identity goes."""
    ids = list(customer_ids)
    subjects = [str(customer_id) for customer_id in ids]
    now = timezone.now()
    counts = {
        "customers_customer": scrub_personal_fields(
            Customer.objects.filter(pk__in=ids),
            email=erased_email_expression(),
            gender="unknown",
            status=CustomerStatus.ERASED,
            email_verified=False,
            phone_verified=False,
            profile_completeness=0,
            version=F("version") + 1,
            updated_at=now,
        ),
        "customers_historicalcustomer": scrub_personal_fields(
            Customer.history.filter(id__in=ids), email=erased_email_expression(), gender="unknown"
        ),
        "customers_customerpreferences": scrub_personal_fields(CustomerPreferences.objects.filter(customer_id__in=ids)),
        "customers_historicalcustomerpreferences": scrub_personal_fields(
            CustomerPreferences.history.filter(customer_id__in=ids)
        ),
        "customers_customeractivity": scrub_personal_fields(CustomerActivity.objects.filter(customer_id__in=ids)),
        "customers_customerstatuschange": scrub_personal_fields(
            CustomerStatusChange.objects.filter(customer_id__in=ids)
        ),
        # Keep the events (downstream consumers may replay them) but not what they said about the person.
        "customers_outboxevent": OutboxEvent.objects.filter(subject__in=subjects)
        .exclude(data={})
        .update(data={"erased": True}),
        # Notes go with their history; the access log stays (ids only: a pseudonymous trail).
        "customers_customernote": CustomerNote.objects.filter(customer_id__in=ids).delete()[0],
        "customers_historicalcustomernote": CustomerNote.history.filter(customer_id__in=ids).delete()[0],
        "customers_duplicatecandidate": DuplicateCandidate.objects.filter(
            models.Q(customer_id__in=ids) | models.Q(other_id__in=ids)
        ).delete()[0],
        "customers_customermerge": scrub_personal_fields(
            CustomerMerge.objects.filter(models.Q(survivor_id__in=ids) | models.Q(merged_id__in=ids))
        ),
        "django_admin_log": LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Customer), object_id__in=subjects
        ).update(object_repr="[erased customer]", change_message="[]"),
    }
    keys = [customer_key(customer_id) for customer_id in ids]
    transaction.on_commit(lambda: cache.delete_many(keys))
    return counts
