"""The address book's part of a customer merge (subscribers to customers' merge events).

On `customer.merged.v1` the merged customer's addresses (soft-deleted ones too: orders point at
them) move to the survivor in the merge's transaction. The survivor keeps its defaults; a moved
default stays default only where the survivor had none. The merge is refused when the survivor
would hold more than MAX_ACTIVE_ADDRESSES active addresses. What moved, with its default flags, is
noted on the merge, and `customer.merge_undone.v1` moves it back. Both go through
`addresses.services.addresses_move`, which records the address and default-address events.
"""

from __future__ import annotations

from uuid import UUID

from addresses import services
from customers import events
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor

KEY = "addresses.address"
SYSTEM = Actor.system("addresses")


def _ids(event) -> tuple[UUID, UUID]:
    return UUID(event.data["survivor_id"]), UUID(event.data["merged_id"])


def on_customer_merged(*, event, actor: Actor | None = None) -> None:
    survivor, merged = _ids(event)
    moved = services.addresses_move(
        actor=actor or SYSTEM, from_customer_id=merged, to_customer_id=survivor, reason="moved here by a customer merge"
    )
    customer_services.customer_merge_note_moved(merge_id=event.data["merge_id"], key=KEY, value=moved)


def on_merge_undone(*, event, actor: Actor | None = None) -> None:
    survivor, merged = _ids(event)
    merge = customer_selectors.merge_get(event.data["merge_id"])
    services.addresses_move(
        actor=actor or SYSTEM,
        from_customer_id=survivor,
        to_customer_id=merged,
        reason="moved back: customer merge undone",
        only=merge.moved.get(KEY, []),
    )


def subscribe() -> None:
    events.subscribe(events.CUSTOMER_MERGED, on_customer_merged)
    events.subscribe(events.CUSTOMER_MERGE_UNDONE, on_merge_undone)
