"""Read queries shared by the API, the admin, the customer representation and tasks."""

from __future__ import annotations

import re
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Q, QuerySet

from addresses.errors import AddressNotFound
from addresses.models import DEFAULT_FLAG, TYPES_FOR_KIND, Address, DefaultKind
from customers.precompiled import PrecompiledQuery, as_uuids


def addresses_active() -> QuerySet[Address]:
    """Addresses not soft-deleted: the only ones the API, the defaults and the limit know about."""
    return Address.objects.filter(deleted_at__isnull=True)


def addresses_of(customer_id: UUID | str, *, kind: str | None = None) -> QuerySet[Address]:
    """A customer's active addresses; `kind` keeps those usable for shipping or billing (`both` counts)."""
    addresses = addresses_active().filter(customer_id=customer_id)
    if kind is not None:
        addresses = addresses.filter(type__in=TYPES_FOR_KIND[kind])
    return addresses


def address_get(*, customer_id: UUID | str, address_id: UUID | str) -> Address:
    """The customer's active address, or ADDRESS_NOT_FOUND (also for another customer's address)."""
    try:
        return addresses_of(customer_id).get(pk=address_id)
    except (Address.DoesNotExist, ValueError, TypeError, DjangoValidationError):  # malformed ids too
        raise AddressNotFound(address_id) from None


def most_recently_used_first() -> list:
    """The order in which a replacement default is picked: last used for an order, then newest."""
    return [F("last_used_at").desc(nulls_last=True), F("created_at").desc(), F("id").desc()]


# The customer representation's fields for the defaults, filled by `default_addresses_by_field`.
DEFAULT_ADDRESS_FIELDS = {
    DefaultKind.SHIPPING: "default_shipping_address",
    DefaultKind.BILLING: "default_billing_address",
}


def _default_addresses(customer_ids: list[UUID]) -> QuerySet[Address]:
    any_default = Q(**{DEFAULT_FLAG[DefaultKind.SHIPPING]: True}) | Q(**{DEFAULT_FLAG[DefaultKind.BILLING]: True})
    return addresses_active().filter(any_default, customer_id__in=customer_ids)


# It runs on every uncached read of a customer.
_default_addresses_query = PrecompiledQuery(_default_addresses, customer_ids=[UUID])


def default_addresses_by_field(customer_ids: list[UUID]) -> dict[str, dict[UUID, Address]]:
    """Both defaults of each customer in one query: {representation field: {customer id: address}}."""
    by_field: dict[str, dict[UUID, Address]] = {name: {} for name in DEFAULT_ADDRESS_FIELDS.values()}
    if not customer_ids:
        return by_field
    for address in _default_addresses_query.instances(customer_ids=as_uuids(customer_ids)):
        for kind in address.default_for:
            by_field[DEFAULT_ADDRESS_FIELDS[kind]][address.customer_id] = address
    return by_field


# ---------------------------------------------------------------- what the customer back-office asks of the book

_POSTAL_CODE_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 -]{2,11}$")


def customers_with_address_matching(term: str) -> QuerySet | None:
    """Ids of customers with an active address whose postal code contains `term`; None when the term
    cannot be (part of) a postal code: at least 3 characters, a digit among them (the trigram index)."""
    term = (term or "").strip()
    if not _POSTAL_CODE_LIKE.match(term) or not any(char.isdigit() for char in term):
        return None
    return addresses_active().filter(postal_code__icontains=term).values("customer_id")


def postal_codes_of(customer_id: UUID | str) -> list[str]:
    return sorted(set(addresses_of(customer_id).exclude(postal_code="").values_list("postal_code", flat=True)))


def customers_at_postal_codes(postal_codes: list[str]) -> QuerySet:
    """Ids of customers with an active address at one of these postal codes (case-insensitive)."""
    match = Q()
    for code in postal_codes:
        match |= Q(postal_code__iexact=code)
    return addresses_active().filter(match).values("customer_id")


# One row per customer for exports: the default shipping address (the partial unique index finds it).
EXPORT_JOIN = "LEFT JOIN addresses_address a ON a.customer_id = c.id AND a.is_default_shipping AND a.deleted_at IS NULL"
EXPORT_COLUMNS = (
    ("shipping_line1", "a.line1", True),
    ("shipping_line2", "a.line2", True),
    ("shipping_postal_code", "a.postal_code", True),
    ("shipping_city", "a.city", True),
    ("shipping_state", "a.state", True),
    ("shipping_country", "a.country", False),
)


def address_history(customer_id: UUID, limit: int) -> list:
    """The customer's latest address changes, for the recent-changes panel of the customer page."""
    from customers.extensions import HistoryEntry

    rows = (
        Address.history.filter(customer_id=customer_id)
        .order_by("-history_date")
        .only("history_date", "history_type", "history_change_reason", "history_actor", "label", "line1", "city")[
            :limit
        ]
    )
    kinds = {"+": "added", "~": "changed", "-": "deleted"}
    return [
        HistoryEntry(
            at=row.history_date,
            what="Address",
            change=row.history_change_reason or kinds.get(row.history_type, row.history_type),
            who=row.history_actor,
        )
        for row in rows
    ]
