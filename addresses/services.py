"""Every write use-case of the address book. API, admin and tasks call these, nothing else.

The rules hold whichever door a change comes through:

- at most one default per customer and kind (shipping, billing; a `both` address counts for each),
  also enforced by partial unique indexes;
- the first address of a kind becomes its default; a new default unsets the old one; deleting or
  retyping the default elects the most recently used remaining address of that kind — all in the
  transaction of the change, so a failure changes nothing;
- at most MAX_ACTIVE_ADDRESSES active addresses per customer;
- deletion is soft (`deleted_at`), so orders keep their address until privacy erasure.

Every write takes a transaction-scoped advisory lock on the customer's address book first, so
concurrent writes for one customer run one after the other (no lost default, no 11th address).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from addresses import events as address_events
from addresses import selectors
from addresses.errors import AddressLimitExceeded
from addresses.models import (
    DEFAULT_FLAG,
    MAX_ACTIVE_ADDRESSES,
    Address,
    AddressType,
    DefaultKind,
    kinds_of,
)
from addresses.validation import ADDRESS_FIELDS, clean_address
from customers import events
from customers import services as customer_services
from customers.actor import Actor
from customers.errors import Conflict, ValidationFailed
from customers.history import stamp
from customers.selectors import customer_get

ERASED = "erased"  # customers.models.CustomerStatus.ERASED, named here so addresses stays off customers.models


def address_validate(values: dict[str, Any]) -> dict[str, Any]:
    """The checks create and update apply, without writing: for forms that show errors per field."""
    return clean_address({name: values.get(name) for name in ADDRESS_FIELDS} | values)


def address_limit_check(*, customer_id: UUID | str | None, adding: int = 1, removing: int = 0) -> None:
    """The limit rule: refuse (ADDRESS_LIMIT_EXCEEDED) when the customer would hold more than
    MAX_ACTIVE_ADDRESSES active addresses after adding `adding` and removing `removing` of them.
    Every door asks this: the services before writing, the admin's forms before saving.
    """
    active = selectors.addresses_of(customer_id).count() if customer_id is not None else 0
    if adding > 0 and active - removing + adding > MAX_ACTIVE_ADDRESSES:
        raise AddressLimitExceeded()


def _open_address_book(actor: Actor, customer_id: UUID | str) -> UUID:
    """Check the actor may see the customer, refuse an erased one, and serialize its address writes."""
    customer = customer_get(actor=actor, customer_id=customer_id)
    if customer.status == ERASED:
        raise Conflict("An erased customer's addresses cannot be changed.", code="CUSTOMER_ERASED")
    _lock_address_book(customer.pk)
    return customer.pk


def _lock_address_book(customer_id: UUID) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"addresses:{customer_id}"])


def _locked_address(customer_id: UUID, address_id: UUID | str) -> Address:
    address = selectors.address_get(customer_id=customer_id, address_id=address_id)
    return Address.objects.select_for_update().get(pk=address.pk)


HISTORY_REASON_MAX = 100  # simple-history's history_change_reason column


def _save(address: Address, actor: Actor, reason: str, now: datetime) -> None:
    address.updated_at = now
    if len(reason) > HISTORY_REASON_MAX:
        reason = reason[: HISTORY_REASON_MAX - 1] + "…"
    stamp(address, actor, reason)
    address.save()


def _record_default_changed(actor: Actor, customer_id: UUID, changes: list[tuple[str, UUID | None, UUID | None]]):
    for kind, old_id, new_id in changes:
        events.record(
            event_type=address_events.DEFAULT_ADDRESS_CHANGED,
            subject=customer_id,
            data=address_events.default_changed_payload(
                customer_id=customer_id, kind=kind, old_id=old_id, new_id=new_id
            ),
            actor=actor,
        )


def _take_default(
    *, actor: Actor, customer_id: UUID, address: Address, kinds: list[str], now: datetime
) -> list[tuple[str, UUID | None, UUID]]:
    """Make `address` the default for `kinds`: unset (and save) the old defaults first, flag `address`.

    The caller saves `address` afterwards; the old rows are saved before it so the partial unique
    indexes never see two defaults.
    """
    kinds = [kind for kind in kinds if not getattr(address, DEFAULT_FLAG[kind])]
    if not kinds:
        return []
    flagged = Q()
    for kind in kinds:
        flagged |= Q(**{DEFAULT_FLAG[kind]: True})
    current = list(selectors.addresses_of(customer_id).filter(flagged).exclude(pk=address.pk).select_for_update())
    changes = []
    touched: dict[UUID, Address] = {}
    for kind in kinds:
        old = next((row for row in current if getattr(row, DEFAULT_FLAG[kind])), None)
        if old is not None:
            setattr(old, DEFAULT_FLAG[kind], False)
            touched[old.pk] = old
        setattr(address, DEFAULT_FLAG[kind], True)
        changes.append((kind, old.pk if old else None, address.pk))
    for old in touched.values():
        _save(old, actor, "no longer the default " + " and ".join(k for k, _, _ in changes), now)
    return changes


def _elect_default(
    *, actor: Actor, customer_id: UUID, kind: str, previous_id: UUID, now: datetime
) -> tuple[str, UUID, UUID | None]:
    """After the default of `kind` went away: the most recently used remaining address takes over."""
    chosen = (
        selectors.addresses_of(customer_id, kind=kind)
        .exclude(pk=previous_id)
        .order_by(*selectors.most_recently_used_first())
        .select_for_update()
        .first()
    )
    if chosen is not None:
        setattr(chosen, DEFAULT_FLAG[kind], True)
        _save(chosen, actor, f"default {kind} (the previous one went away)", now)
    return kind, previous_id, chosen.pk if chosen else None


def _kinds_requested(address: Address, requested: str | None) -> list[str]:
    available = kinds_of(address.type)
    if requested in (None, "", AddressType.BOTH):
        if requested == AddressType.BOTH and address.type != AddressType.BOTH:
            raise ValidationFailed(
                f"A {address.type} address cannot be the default for both.",
                errors={"type": [f"A {address.type} address cannot be the default billing and shipping address."]},
            )
        return available
    if requested not in DefaultKind.values:
        raise ValidationFailed(
            f"Unknown address type {requested!r}.", errors={"type": ["Must be shipping, billing or both."]}
        )
    if requested not in available:
        raise ValidationFailed(
            f"A {address.type} address cannot be the default {requested} address.",
            errors={"type": [f"A {address.type} address cannot be the default {requested} address."]},
        )
    return [requested]


@transaction.atomic
def address_create(*, actor: Actor, customer_id: UUID | str, make_default: bool = False, **fields: Any) -> Address:
    """Add an address; it becomes the default of its kinds when asked to or when it is the first."""
    customer_pk = _open_address_book(actor, customer_id)
    cleaned = address_validate(fields)
    address_limit_check(customer_id=customer_pk)

    now = timezone.now()
    address = Address(customer_id=customer_pk, **cleaned, is_validated=True, created_at=now, updated_at=now)
    taking = [
        kind
        for kind in kinds_of(address.type)
        if make_default or not selectors.addresses_of(customer_pk).filter(**{DEFAULT_FLAG[kind]: True}).exists()
    ]
    changes = _take_default(actor=actor, customer_id=customer_pk, address=address, kinds=taking, now=now)
    stamp(address, actor, "created")
    address.save()

    events.record(
        event_type=address_events.ADDRESS_ADDED,
        subject=customer_pk,
        data=address_events.address_payload(address),
        actor=actor,
    )
    _record_default_changed(actor, customer_pk, changes)
    customer_services.customer_representation_changed(customer_id=customer_pk)
    return address


@transaction.atomic
def address_update(
    *, actor: Actor, customer_id: UUID | str, address_id: UUID | str, changes: dict[str, Any]
) -> Address:
    """Change an address's fields; the whole address is validated again. Defaults follow a type change."""
    customer_pk = _open_address_book(actor, customer_id)
    address = _locked_address(customer_pk, address_id)
    cleaned = address_validate({name: getattr(address, name) for name in ADDRESS_FIELDS} | dict(changes))
    changed = sorted(name for name in ADDRESS_FIELDS if getattr(address, name) != cleaned[name])
    if not changed and address.is_validated:
        return address

    now = timezone.now()
    kinds_before = kinds_of(address.type)
    for name in changed:
        setattr(address, name, cleaned[name])
    address.is_validated = True
    kinds_after = kinds_of(address.type)
    lost = [kind for kind in kinds_before if kind not in kinds_after and getattr(address, DEFAULT_FLAG[kind])]
    for kind in lost:
        setattr(address, DEFAULT_FLAG[kind], False)
    gained = [
        kind
        for kind in kinds_after
        if kind not in kinds_before
        and not selectors.addresses_of(customer_pk).filter(**{DEFAULT_FLAG[kind]: True}).exists()
    ]
    default_changes = _take_default(actor=actor, customer_id=customer_pk, address=address, kinds=gained, now=now)
    _save(address, actor, "updated: " + ", ".join(changed or ["validated"]), now)
    default_changes += [
        _elect_default(actor=actor, customer_id=customer_pk, kind=kind, previous_id=address.pk, now=now)
        for kind in lost
    ]

    events.record(
        event_type=address_events.ADDRESS_UPDATED,
        subject=customer_pk,
        data=address_events.address_payload(address, changed_fields=changed),
        actor=actor,
    )
    _record_default_changed(actor, customer_pk, default_changes)
    customer_services.customer_representation_changed(customer_id=customer_pk)
    return address


@transaction.atomic
def address_set_default(
    *, actor: Actor, customer_id: UUID | str, address_id: UUID | str, kind: str | None = None
) -> Address:
    """Make the address the default for `kind` (shipping or billing), or for every kind its type covers."""
    customer_pk = _open_address_book(actor, customer_id)
    address = _locked_address(customer_pk, address_id)
    kinds = _kinds_requested(address, kind)
    now = timezone.now()
    changes = _take_default(actor=actor, customer_id=customer_pk, address=address, kinds=kinds, now=now)
    if not changes:
        return address
    _save(address, actor, "default " + " and ".join(k for k, _, _ in changes), now)
    _record_default_changed(actor, customer_pk, changes)
    customer_services.customer_representation_changed(customer_id=customer_pk)
    return address


@transaction.atomic
def address_delete(*, actor: Actor, customer_id: UUID | str, address_id: UUID | str) -> None:
    """Soft-delete the address; a default it held passes to the most recently used remaining one."""
    customer_pk = _open_address_book(actor, customer_id)
    address = _locked_address(customer_pk, address_id)
    now = timezone.now()
    was_default = address.default_for
    for kind in was_default:
        setattr(address, DEFAULT_FLAG[kind], False)
    address.deleted_at = now
    _save(address, actor, "deleted", now)

    events.record(
        event_type=address_events.ADDRESS_REMOVED,
        subject=customer_pk,
        data=address_events.address_payload(address, was_default_for=was_default),
        actor=actor,
    )
    changes = [
        _elect_default(actor=actor, customer_id=customer_pk, kind=kind, previous_id=address.pk, now=now)
        for kind in was_default
    ]
    _record_default_changed(actor, customer_pk, changes)
    customer_services.customer_representation_changed(customer_id=customer_pk)


@transaction.atomic
def address_mark_used(
    *, actor: Actor, customer_id: UUID | str, address_id: UUID | str, used_at: datetime | None = None
) -> Address:
    """An order used the address (fed by order events): it counts as most recently used for defaults."""
    customer_pk = _open_address_book(actor, customer_id)
    address = _locked_address(customer_pk, address_id)
    used_at = used_at or timezone.now()
    if address.last_used_at is not None and address.last_used_at >= used_at:
        return address  # an older or repeated event changes nothing
    address.last_used_at = used_at
    stamp(address, actor, "used for an order")
    address.save(update_fields=["last_used_at"])
    customer_services.customer_representation_changed(customer_id=customer_pk)
    return address


@transaction.atomic
def addresses_move(
    *,
    actor: Actor,
    from_customer_id: UUID,
    to_customer_id: UUID,
    reason: str,
    only: list[dict] | None = None,
) -> list[dict]:
    """Move addresses from one customer to another (a customer merge, and its undo).

    Moves every address of `from_customer_id` (soft-deleted ones too: orders point at them), or,
    with `only` (`[{"id", "is_default_shipping", "is_default_billing"}]`, what an earlier move
    returned), those addresses with the default flags they had then. The target keeps its defaults:
    a moved default stays default only where the target has none. The source elects a new default
    for what it lost when it still has addresses of that kind. Refused with ADDRESS_LIMIT_EXCEEDED
    when the target would hold more than MAX_ACTIVE_ADDRESSES active addresses.

    Records, for each active address moved, `customer.address.removed.v1` on the source and
    `customer.address.added.v1` on the target (both naming the other customer and the reason), and
    `customer.default_address.changed.v1` for every default that changed on either side. Returns
    what moved, with its default flags before the move.
    """
    for customer_id in sorted((from_customer_id, to_customer_id), key=str):
        _lock_address_book(customer_id)
    moving_qs = Address.objects.filter(customer_id=from_customer_id)
    wanted_flags: dict[str, dict] = {}
    if only is not None:
        wanted_flags = {str(item["id"]): item for item in only}
        moving_qs = moving_qs.filter(pk__in=list(wanted_flags))
    moving = list(moving_qs.select_for_update().order_by("created_at", "id"))
    active = [address for address in moving if address.deleted_at is None]
    address_limit_check(customer_id=to_customer_id, adding=len(active))
    target = selectors.addresses_of(to_customer_id)
    target_has = {kind: target.filter(**{flag: True}).exists() for kind, flag in DEFAULT_FLAG.items()}
    now = timezone.now()
    moved: list[dict] = []
    source_lost: list[tuple[str, UUID]] = []
    target_gained: list[tuple[str, UUID]] = []
    for address in moving:
        before = {flag: getattr(address, flag) for flag in DEFAULT_FLAG.values()}
        moved.append({"id": str(address.pk), **before})
        was_default_for = address.default_for
        source_lost += [(kind, address.pk) for kind in was_default_for]
        wanted = wanted_flags.get(str(address.pk), before)
        if address.deleted_at is None:
            events.record(
                event_type=address_events.ADDRESS_REMOVED,
                subject=from_customer_id,
                data=address_events.address_payload(
                    address,
                    is_default_shipping=False,
                    is_default_billing=False,
                    was_default_for=was_default_for,
                    moved_to_customer_id=str(to_customer_id),
                    reason=reason,
                ),
                actor=actor,
            )
        for kind, flag in DEFAULT_FLAG.items():
            take = bool(wanted.get(flag)) and address.deleted_at is None and not target_has[kind]
            setattr(address, flag, take)
            if take:
                target_has[kind] = True
                target_gained.append((kind, address.pk))
        address.customer_id = to_customer_id
        _save(address, actor, reason, now)
        if address.deleted_at is None:
            events.record(
                event_type=address_events.ADDRESS_ADDED,
                subject=to_customer_id,
                data=address_events.address_payload(
                    address, moved_from_customer_id=str(from_customer_id), reason=reason
                ),
                actor=actor,
            )
    source_changes = [
        _elect_default(actor=actor, customer_id=from_customer_id, kind=kind, previous_id=previous_id, now=now)
        for kind, previous_id in source_lost
    ]
    _record_default_changed(actor, from_customer_id, source_changes)
    _record_default_changed(actor, to_customer_id, [(kind, None, address_id) for kind, address_id in target_gained])
    if moving:
        customer_services.customer_representation_changed(customer_id=from_customer_id)
        customer_services.customer_representation_changed(customer_id=to_customer_id)
    return moved


@transaction.atomic
def addresses_erase(*, actor: Actor, customer_id: UUID | str) -> int:
    """Privacy erasure: remove every address of the customer, soft-deleted ones and history included."""
    customer_pk = customer_get(actor=actor, customer_id=customer_id).pk
    _lock_address_book(customer_pk)
    _, removed_per_model = Address.objects.filter(customer_id=customer_pk).delete()
    # After the rows: deleting them writes one more historical row each, which must go too.
    Address.history.filter(customer_id=customer_pk).delete()
    customer_services.customer_representation_changed(customer_id=customer_pk)
    return removed_per_model.get(Address._meta.label, 0)


# The address book's part of data-subject rights, offered to privacy as this app's services.
from addresses.data_rights import addresses_purge_deleted as addresses_purge_deleted  # noqa: E402
from addresses.data_rights import erase_customers_data as erase_customers_data  # noqa: E402
from addresses.data_rights import export_customer_data as export_customer_data  # noqa: E402
