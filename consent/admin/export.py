"""The consent record as CSV for an audit: who, what, when, how, which wording."""

from __future__ import annotations

import csv
import logging

from django.db.models import OuterRef, Subquery
from django.http import StreamingHttpResponse
from django.utils import timezone

from customers import selectors as customer_selectors
from customers.actor import Actor

logger = logging.getLogger(__name__)


CSV_COLUMNS = (
    # who
    ("customer_id", lambda r: r.customer_id),
    ("customer_number", lambda r: r.customer_number or ""),
    ("recorded_by", lambda r: r.actor),
    # what
    ("record_id", lambda r: r.id),
    ("purpose", lambda r: r.purpose.code),
    ("previous_status", lambda r: r.previous_status),
    ("status", lambda r: r.status),
    ("implicit", lambda r: r.implicit),
    ("trigger", lambda r: r.trigger),
    ("valid_until", lambda r: r.valid_until.isoformat() if r.valid_until else ""),
    # when
    ("occurred_at", lambda r: r.occurred_at.isoformat()),
    ("recorded_at", lambda r: r.recorded_at.isoformat()),
    # how
    ("source", lambda r: r.source),
    ("ip_address", lambda r: r.ip_address or ""),
    ("user_agent", lambda r: r.user_agent),
    ("staff_reason", lambda r: r.reason),
    # which wording
    ("policy_version", lambda r: r.policy_version.version),
    ("policy_effective_at", lambda r: r.policy_version.effective_at.isoformat()),
    ("policy_text_hash", lambda r: r.policy_version.text_hash),
    ("policy_notice_url", lambda r: r.policy_version.notice_url),
    ("policy_notice_text", lambda r: r.policy_version.notice_text),
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet must not run a user agent or a reason as a formula.
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Echo:
    def write(self, value):
        return value


def customer_number_subquery() -> Subquery:
    customers = customer_selectors.customers_visible_to(Actor.system("consent_export"))
    return Subquery(customers.filter(pk=OuterRef("customer_id")).values("customer_number")[:1])


def consent_records_csv(records, *, filename_prefix: str = "consent-records") -> StreamingHttpResponse:
    """The records as CSV (who, what, when, how, which wording), streamed in chunks."""
    records = (
        records.select_related("purpose", "policy_version")
        .annotate(customer_number=customer_number_subquery())
        .order_by("customer_id", "occurred_at", "recorded_at")
    )
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow([name for name, _ in CSV_COLUMNS])
        for record in records.iterator(chunk_size=2000):
            yield writer.writerow([_cell(value(record)) for _, value in CSV_COLUMNS])

    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename_prefix}-{stamp}.csv"'
    return response
