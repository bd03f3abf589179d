"""The addresses app's domain events and their payloads.

Payloads carry ids, types and the country only: the address itself (personal data) stays here and
consumers fetch it through the API when they need it.
"""

from __future__ import annotations

from typing import Any

from addresses.models import Address

ADDRESS_ADDED = "customer.address.added.v1"
ADDRESS_UPDATED = "customer.address.updated.v1"
ADDRESS_REMOVED = "customer.address.removed.v1"
DEFAULT_ADDRESS_CHANGED = "customer.default_address.changed.v1"


def address_payload(address: Address, **extra: Any) -> dict:
    return {
        "customer_id": str(address.customer_id),
        "address_id": str(address.id),
        "type": address.type,
        "country": address.country,
        "is_default_shipping": address.is_default_shipping,
        "is_default_billing": address.is_default_billing,
        **extra,
    }


def default_changed_payload(*, customer_id: object, kind: str, old_id: object, new_id: object) -> dict:
    return {
        "customer_id": str(customer_id),
        "type": kind,
        "old_address_id": str(old_id) if old_id else None,
        "new_address_id": str(new_id) if new_id else None,
    }
