"""The address book's part of a customer merge (subscribers to customers' merge events).

On `customer.merged.v1` the merged customer's addresses (soft-deleted ones too: orders point at
them) move to the survivor in the merge's transaction. The survivor keeps its defaults; a moved
default stays default only where the survivor had none. The merge is refused when the survivor
would hold more than MAX_ACTIVE_ADDRESSES active addresses. What moved, with its default flags, is
noted on the merge, and `customer.merge_undone.v1` moves it back.
"""

from __future__ import annotations

from uuid import UUID

from django.utils import timezone

from addresses import selectors
from addresses.errors import AddressLimitExceeded
from addresses.models import DEFAULT_FLAG, MAX_ACTIVE_ADDRESSES, Address
from addresses.services import _elect_default, _lock_address_book, _save
from customers import events
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor

KEY = "addresses.address"
SYSTEM = Actor.system("addresses")


def _ids(event) -> tuple[UUID, UUID]:
    return UUID(event.data["survivor_id"]), UUID(event.data["merged_id"])


def _lock_both(first: UUID, second: UUID) -> None:
    for customer_id in sorted((first, second), key=str):
        _lock_address_book(customer_id)


def on_customer_merged(*, event, actor: Actor | None = None) -> None:
    actor = actor or SYSTEM
    survivor, merged = _ids(event)
    _lock_both(survivor, merged)
    moving = list(Address.objects.filter(customer_id=merged).select_for_update().order_by("created_at"))
    active = [address for address in moving if address.deleted_at is None]
    if active and selectors.addresses_of(survivor).count() + len(active) > MAX_ACTIVE_ADDRESSES:
        raise AddressLimitExceeded()
    has_default = {
        kind: selectors.addresses_of(survivor).filter(**{flag: True}).exists() for kind, flag in DEFAULT_FLAG.items()
    }
    now = timezone.now()
    moved = []
    for address in moving:
        moved.append({"id": str(address.pk), **{flag: getattr(address, flag) for flag in DEFAULT_FLAG.values()}})
        address.customer_id = survivor
        for kind, flag in DEFAULT_FLAG.items():
            if getattr(address, flag) and has_default[kind]:
                setattr(address, flag, False)
        _save(address, actor, "moved here by a customer merge", now)
    customer_services.customer_merge_note_moved(merge_id=event.data["merge_id"], key=KEY, value=moved)
    if moving:
        customer_services.customer_representation_changed(customer_id=survivor)


def on_merge_undone(*, event, actor: Actor | None = None) -> None:
    actor = actor or SYSTEM
    survivor, merged = _ids(event)
    merge = customer_selectors.merge_get(event.data["merge_id"])
    _lock_both(survivor, merged)
    now = timezone.now()
    lost_defaults = []
    moved_back = 0
    for item in merge.moved.get(KEY, []):
        address = Address.objects.select_for_update().filter(pk=item["id"], customer_id=survivor).first()
        if address is None:
            continue  # erased or otherwise gone since
        for kind, flag in DEFAULT_FLAG.items():
            if getattr(address, flag):
                lost_defaults.append((kind, address.pk))
            wanted = bool(item.get(flag)) and address.deleted_at is None
            taken = selectors.addresses_of(merged).filter(**{flag: True}).exists()
            setattr(address, flag, wanted and not taken)
        address.customer_id = merged
        _save(address, actor, "moved back: customer merge undone", now)
        moved_back += 1
    for kind, previous_id in lost_defaults:
        _elect_default(actor=actor, customer_id=survivor, kind=kind, previous_id=previous_id, now=now)
    if moved_back:
        customer_services.customer_representation_changed(customer_id=survivor)
        customer_services.customer_representation_changed(customer_id=merged)


def subscribe() -> None:
    events.subscribe(events.CUSTOMER_MERGED, on_customer_merged)
    events.subscribe(events.CUSTOMER_MERGE_UNDONE, on_merge_undone)
