"""Who looked at whose personal data: a row per customer page opened, export made or export downloaded.

Rows hold ids only (staff user, customer, the job or request it went through), so the log itself
carries no personal data and survives the customer's erasure as a pseudonymous trail. Bulk exports
write one row per exported customer with one set-based INSERT.
"""

from __future__ import annotations

from uuid import UUID

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from customers.models import AccessAction, AccessLog


def access_log_record(*, user, customer_id: UUID | str, action: str, reference: str = "") -> AccessLog:
    if action not in AccessAction.values:
        raise ValueError(f"unknown access action {action!r}")
    return AccessLog.objects.create(
        user_id=user.pk, customer_id=customer_id, action=action, reference=str(reference or "")[:64]
    )


def access_log_record_selection(*, user, selection_sql: str, params: list, action: str, reference: str = "") -> int:
    """One row per customer id the SQL selects (e.g. a bulk export's selection); returns how many."""
    if action not in AccessAction.values:
        raise ValueError(f"unknown access action {action!r}")
    with connection.cursor() as cursor:
        insert = "INSERT INTO customers_accesslog (user_id, customer_id, action, reference, at)"
        source = f"({selection_sql}) AS s(id)" if selection_sql else "customers_customer AS s"  # "": everyone
        query = f"{insert} SELECT %s, s.id, %s, %s, %s FROM {source}"  # noqa: S608 - our ORM's SQL
        cursor.execute(query, [user.pk, action, str(reference or "")[:64], timezone.now(), *params])
        return cursor.rowcount


def access_log_record_ids(*, user, customer_ids, action: str, reference: str = "") -> int:
    """One row per customer in `customer_ids`: a queryset selecting one column of customer ids (set-based,
    one INSERT ... SELECT) or an iterable of ids. Every export of customer data outside the customer
    export jobs (segment member lists, consent-record audits, ...) logs through this; returns how many."""
    if isinstance(customer_ids, QuerySet):
        if len(customer_ids.query.values_select or ()) + len(customer_ids.query.annotation_select) != 1:
            raise ValueError("customer_ids must select exactly one column (e.g. .values('customer_id'))")
        selection_sql, params = customer_ids.order_by().query.sql_with_params()
        return access_log_record_selection(
            user=user, selection_sql=selection_sql, params=list(params), action=action, reference=reference
        )
    if action not in AccessAction.values:
        raise ValueError(f"unknown access action {action!r}")
    now, reference = timezone.now(), str(reference or "")[:64]
    rows = [
        AccessLog(user_id=user.pk, customer_id=customer_id, action=action, reference=reference, at=now)
        for customer_id in dict.fromkeys(customer_ids)
    ]
    return len(AccessLog.objects.bulk_create(rows, batch_size=5_000))


def access_log_of(customer_id: UUID | str) -> QuerySet[AccessLog]:
    return AccessLog.objects.filter(customer_id=customer_id).order_by("-at", "-id")
