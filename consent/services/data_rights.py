"""Consent's part of data-subject rights (see customers.data_rights)."""

from __future__ import annotations

from django.utils import timezone

from consent.models import ConsentRecord, ConsentState
from customers.services import export_rows


def _with_codes(rows: list[dict], queryset) -> list[dict]:
    """Purpose codes and version labels beside the ids, so the export reads (and re-imports) on its own."""
    names = {
        str(pk): (code, label)
        for pk, code, label in queryset.values_list("pk", "purpose__code", "policy_version__version")
    }
    for row in rows:
        row["purpose_code"], row["policy_version_label"] = names[str(row["id"])]
    return rows


def export_customer_data(customer_id) -> dict:
    states = ConsentState.objects.filter(customer_id=customer_id).order_by("purpose__code")
    records = ConsentRecord.objects.filter(customer_id=customer_id).order_by("occurred_at")
    return {
        "current_state": _with_codes(export_rows(states), states),
        "record": _with_codes(export_rows(records), records),
    }


def erase_customers_data(customer_ids: list) -> dict[str, int]:
    """Keep the proof, reduced to the pseudonymous customer id: IP, user agent and staff reasons go."""
    redacted = ConsentRecord.objects.filter(customer_id__in=customer_ids, redacted_at__isnull=True)
    return {"consent_consentrecord": redacted._redact_personal_data(at=timezone.now())}
