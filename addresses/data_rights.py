"""The address book's part of data-subject rights (see customers.data_rights)."""

from __future__ import annotations

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from addresses.models import Address
from customers.services import export_rows


def _delete_without_history(column: str, values: list[str]) -> int:
    """A plain DELETE: the ORM's delete would write one more historical row (with the data) per address."""
    with connection.cursor() as cursor:
        # Table and column names are ours (model metadata and the two callers above), never input.
        cursor.execute(f"DELETE FROM addresses_address WHERE {column} = ANY(%s::uuid[])", [values])  # noqa: S608
        return cursor.rowcount


def export_customer_data(customer_id) -> dict:
    """Every address the customer ever gave us, soft-deleted ones too, with their history."""
    return {
        "addresses": export_rows(Address.objects.filter(customer_id=customer_id).order_by("created_at")),
        "addresses_history": export_rows(Address.history.filter(customer_id=customer_id).order_by("history_date")),
    }


def erase_customers_data(customer_ids: list) -> dict[str, int]:
    """Delete the addresses and their history outright (set-based, no new history rows)."""
    ids = [str(customer_id) for customer_id in customer_ids]
    address_ids = [str(pk) for pk in Address.objects.filter(customer_id__in=ids).values_list("pk", flat=True)]
    history = Address.history.filter(customer_id__in=ids).delete()[0]
    addresses = _delete_without_history("customer_id", ids)
    admin_log = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Address), object_id__in=address_ids
    ).update(object_repr="[erased address]", change_message="[]")
    return {
        "addresses_address": addresses,
        "addresses_historicaladdress": history,
        "django_admin_log (addresses)": admin_log,
    }


def addresses_purge_deleted(*, deleted_before, dry_run: bool) -> int:
    """Retention: soft-deleted addresses are kept for order history only this long."""
    expired = Address.objects.filter(deleted_at__lt=deleted_before)
    if dry_run:
        return expired.count()
    ids = [str(pk) for pk in expired.values_list("pk", flat=True)]
    if not ids:
        return 0
    Address.history.filter(id__in=ids).delete()
    return _delete_without_history("id", ids)
