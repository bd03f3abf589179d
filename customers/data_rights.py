"""The customers app's part of data-subject rights, and the helpers every app uses for its own part.

Each app offers privacy two functions in its services: `export_customer_data(customer_id)` and
`erase_customers_data(customer_ids)` (set-based, for one customer or a retention batch). Which
columns are scrubbed is read from `data_classification`, so a new personal field is erased too.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Concat, Replace
from django.db.models.functions.comparison import Cast
from django.utils import timezone

from customers.cache import invalidate_customers_on_commit
from customers.data_classification import classification_of, personal_fields
from customers.models import (
    AccessAction,
    AccessLog,
    Customer,
    CustomerActivity,
    CustomerExportJob,
    CustomerMerge,
    CustomerNote,
    CustomerPreferences,
    CustomerStatus,
    CustomerStatusChange,
    DuplicateCandidate,
    ExportJobStatus,
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


def _like_patterns(values) -> list[str]:
    escaped = (value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for value in values)
    return [f"%{value}%" for value in escaped]


def _identifying_values(ids: list) -> list[str]:
    """What a raw message or a search term would carry to name these customers: id, email, external id."""
    values: set[str] = {str(customer_id) for customer_id in ids}
    for email, external_id in Customer.objects.filter(pk__in=ids).values_list("email", "external_id"):
        if email:
            values.add(email)
        if external_id and len(external_id) >= 3:
            values.add(external_id)
    return sorted(values)


def _erase_dead_letters(values: list[str]) -> int:
    """Dead letters keep raw message bodies (personal): the ones naming these customers are deleted."""
    if not values:
        return 0
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM customers_deadletter WHERE body ILIKE ANY(%s)", [_like_patterns(values)])
        return cursor.rowcount


def _jobs_naming(values: list[str]):
    """Ids of export jobs whose stored selection parameters hold one of the values (a search for them)."""
    return CustomerExportJob.objects.extra(
        where=["selection_params::text ILIKE ANY(%s)"], params=[_like_patterns(values)]
    ).values("pk")


def _erase_export_jobs(ids: list, values: list[str]) -> dict[str, int]:
    """Staff exports (CUSTOMER_EXPORT_DIR) that hold these customers go: the file and the job with its
    selection parameters (a search term may be their email or name). Decided here, documented in the
    erasure log's counts: a file cannot be redacted in place (CSV/XLSX), and the requester can export
    again, which then shows the anonymized rows. A file holds exactly the customers its job logged as
    exported (the access log is written from the COPY's own snapshot), so one query finds them, however
    many jobs are stored. A job still running is left alone (its worker owns the file) and counted as
    `customers_customerexportjob (running, kept)`; retention purges it later.
    """
    exported_them = AccessLog.objects.filter(
        action=AccessAction.EXPORT, customer_id__in=ids, reference=Cast(OuterRef("pk"), models.CharField())
    )
    holding = CustomerExportJob.objects.filter(Exists(exported_them) | Q(pk__in=_jobs_naming(values)))
    running = holding.filter(status=ExportJobStatus.RUNNING).count()
    matched = list(holding.exclude(status=ExportJobStatus.RUNNING))
    files = [job.file_path for job in matched if job.file_path]

    def remove_files():
        for name in files:
            Path(name).unlink(missing_ok=True)
            Path(name).with_suffix(".part").unlink(missing_ok=True)

    transaction.on_commit(remove_files)
    deleted = CustomerExportJob.objects.filter(pk__in=[job.pk for job in matched]).delete()[0]
    counts = {"customers_customerexportjob": deleted, "customer_export_files": len(files)}
    if running:
        counts["customers_customerexportjob (running, kept)"] = running
    return counts


def _scrub_outbox(subjects: list[str]) -> int:
    """Keep the events (downstream consumers may replay them) but strip the fields their schema flags
    personal, so every payload stays valid against its schema; an event without a schema keeps nothing."""
    from customers.messaging.schemas import schema_for

    events = OutboxEvent.objects.filter(subject__in=subjects).exclude(data={})
    touched = 0
    with connection.cursor() as cursor:
        for event_type in events.values_list("event_type", flat=True).distinct().order_by():
            schema = schema_for(event_type)
            if schema is None:
                touched += events.filter(event_type=event_type).update(data={})
                continue
            personal = sorted(schema.personal_fields)
            if not personal:
                continue
            cursor.execute(
                "UPDATE customers_outboxevent SET data = data - %s::text[]"
                " WHERE subject = ANY(%s) AND event_type = %s AND data ?| %s::text[]",
                [personal, subjects, event_type, personal],
            )
            touched += cursor.rowcount
    return touched


def erase_customers_data(customer_ids: list) -> dict[str, int]:
    """Anonymize the customers everywhere this app keeps their data; ids stay, identity goes."""
    ids = list(customer_ids)
    subjects = [str(customer_id) for customer_id in ids]
    now = timezone.now()
    values = _identifying_values(ids)  # before the rows are anonymized
    counts = {
        **_erase_export_jobs(ids, values),
        "customers_deadletter": _erase_dead_letters(values),
    }
    counts.update({
        # Already erased rows are scrubbed again without a new version: a second pass changes nothing.
        "customers_customer (already erased)": scrub_personal_fields(
            Customer.objects.filter(pk__in=ids, status=CustomerStatus.ERASED),
            email=erased_email_expression(),
            gender="unknown",
        ),
        "customers_customer": scrub_personal_fields(
            Customer.objects.filter(pk__in=ids).exclude(status=CustomerStatus.ERASED),
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
        # Activity about the person is deleted, not blanked (the issue: "deletes ... activity about them").
        "customers_customeractivity": CustomerActivity.objects.filter(customer_id__in=ids).delete()[0],
        "customers_customerstatuschange": scrub_personal_fields(
            CustomerStatusChange.objects.filter(customer_id__in=ids)
        ),
        "customers_outboxevent": _scrub_outbox(subjects),
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
    })
    invalidate_customers_on_commit(ids)
    return counts
