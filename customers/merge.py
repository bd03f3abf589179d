"""Merging two records of one person, and undoing it within a window.

`customer_merge` keeps the survivor, takes field by field the values the rep chose, moves what the
customers app holds about the other one (notes, activity, orders, support cases, loyalty points) to
the survivor, and marks the other `merged` with `merged_into`, all in one transaction. It records
`customer.merged.v1`: the higher apps (addresses, consent, segments) subscribe in the transaction,
move their own rows and note what they moved with `customer_merge_note_moved`, so customers never
imports them. `CustomerMerge` keeps both profiles as they were and the ids of every moved row, so
`customer_merge_undo` can move them back (and the apps do the same on `customer.merge_undone.v1`).

A value the survivor got from the merge is restored on undo only if nobody changed it since: a
later edit wins. The merged customer cannot change while merged (its services refuse), so it is
restored as it was.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from simple_history.utils import bulk_update_with_history

from customers import events
from customers.actor import Actor
from customers.cache import invalidate_customer_on_commit
from customers.data_rights import json_value
from customers.errors import Conflict, CustomerNotFound, EmailAlreadyExists, NotFound, ValidationFailed
from customers.history import stamp
from customers.models import (
    Customer,
    CustomerActivity,
    CustomerMerge,
    CustomerNote,
    CustomerOrder,
    CustomerStatus,
    CustomerStatusChange,
    DuplicateCandidate,
    DuplicateStatus,
    SupportCase,
)

SURVIVOR, MERGED, BOTH = "survivor", "merged", "both"
_GONE = (CustomerStatus.ERASED, CustomerStatus.MERGED)
# Moving verification with the address it verifies: taking the other's email takes its flag too.
_FOLLOWS = {"email": "email_verified", "phone": "phone_verified"}


class MergeNotFound(NotFound):
    code = "MERGE_NOT_FOUND"


def mergeable_fields() -> tuple[str, ...]:
    from customers.services import PROFILE_FIELDS

    return PROFILE_FIELDS


def _snapshot(customer: Customer) -> dict[str, Any]:
    values = {name: json_value(getattr(customer, name)) for name in mergeable_fields()}
    values.update(
        status=customer.status,
        customer_number=customer.customer_number,
        processing_restricted=customer.processing_restricted,
    )
    return values


def _from_json(name: str, value: Any) -> Any:
    return Customer._meta.get_field(name).to_python(value)


def _clean_choices(choices: dict[str, str] | None) -> dict[str, str]:
    choices = dict(choices or {})
    fields = mergeable_fields()
    errors = {}
    for name, choice in choices.items():
        if name not in fields:
            errors[name] = ["Not a profile field."]
        elif choice not in (SURVIVOR, MERGED) and not (choice == BOTH and name == "tags"):
            errors[name] = ["Choose survivor or merged (tags may also be both)."]
    if errors:
        raise ValidationFailed("Invalid field choices.", errors=errors)
    return choices


def _lock_pair(first_id, second_id) -> dict[str, Customer]:
    if str(first_id) == str(second_id):
        raise ValidationFailed(
            "Choose two different customers.", errors={"merged_id": ["The same customer as the survivor."]}
        )
    try:
        found = list(Customer.objects.select_for_update().filter(pk__in=[first_id, second_id]).order_by("pk"))
    except (ValueError, TypeError):
        found = []
    by_id = {str(customer.pk): customer for customer in found}
    for wanted in (first_id, second_id):
        if str(wanted) not in by_id:
            raise CustomerNotFound(wanted)
    return by_id


def _values_from(survivor: Customer, merged: Customer, choices: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, choice in choices.items():
        if choice == MERGED:
            values[name] = getattr(merged, name)
        elif choice == BOTH:
            values[name] = list(dict.fromkeys([*survivor.tags, *merged.tags]))[:50]
    for field, flag in _FOLLOWS.items():
        if choices.get(field) == MERGED and flag not in choices:
            values[flag] = getattr(merged, flag)
    return values


def _ids(queryset) -> list:
    return [json_value(pk) for pk in queryset.values_list("pk", flat=True)]


def _move_notes(ids: list, *, to: Customer, actor: Actor, reason: str) -> None:
    notes = list(CustomerNote.objects.filter(pk__in=ids))
    for note in notes:
        note.customer = to
    if notes:
        bulk_update_with_history(
            notes,
            CustomerNote,
            ["customer"],
            default_user=actor.user if actor.kind == "staff" else None,
            default_change_reason=reason[:100],
        )
        CustomerNote.history.filter(id__in=ids, history_actor="").update(history_actor=actor.label)


@transaction.atomic
def customer_merge(
    *,
    actor: Actor,
    survivor_id: UUID | str,
    merged_id: UUID | str,
    choices: dict[str, str] | None = None,
    reason: str = "",
) -> CustomerMerge:
    """Fold `merged_id` into `survivor_id`; `choices` maps profile fields to `merged` where its value wins."""
    from customers import services
    from customers.duplicates import duplicates_detect
    from customers.messaging.effects import customer_metrics_recompute

    choices = _clean_choices(choices)
    locked = _lock_pair(survivor_id, merged_id)
    survivor, merged = locked[str(survivor_id)], locked[str(merged_id)]
    for customer in (survivor, merged):
        if customer.status in _GONE:
            raise Conflict(
                f"Customer {customer.customer_number} is {customer.status} and cannot be merged.",
                code="CUSTOMER_NOT_MERGEABLE",
            )
    now = timezone.now()
    survivor_before, merged_before = _snapshot(survivor), _snapshot(merged)
    label = f"merge of {merged.customer_number} into {survivor.customer_number}"

    # The merged customer first: it gives up its email, which the survivor may take, and its external id
    # when the survivor takes that. Otherwise it keeps it: other services' events that name it (the
    # identity service's user id: orders, the user's deletion) still find the person, through `merged_into`.
    previous_status = merged.status
    merged.status = CustomerStatus.MERGED
    merged.merged_into = survivor
    merged.email = f"merged-{merged.pk.hex}@merged.invalid"
    if choices.get("external_id") == MERGED:
        merged.external_id = None
    merged.updated_at = now
    merged.version += 1
    stamp(merged, actor, f"merged into {survivor.customer_number}")
    merged.save()
    CustomerStatusChange.objects.create(
        customer=merged,
        from_status=previous_status,
        to_status=CustomerStatus.MERGED,
        reason=(reason or f"Merged into {survivor.customer_number}")[:1000],
        actor=actor.label,
    )

    values = _values_from(survivor, merged_before_customer(merged, merged_before), choices)
    changed = sorted(name for name, value in values.items() if getattr(survivor, name) != value)
    if changed:
        for name in changed:
            setattr(survivor, name, values[name])
        services._check_business_fields(survivor)
        survivor.profile_completeness = services._profile_completeness(survivor)
        survivor.updated_at = now
        survivor.version += 1
        stamp(survivor, actor, f"merged {merged.customer_number}: " + ", ".join(changed))
        services._save_guarding_uniques(survivor)
        events.record(
            event_type=events.CUSTOMER_UPDATED,
            subject=survivor.pk,
            data={"customer_id": str(survivor.pk), "changed_fields": changed, "version": survivor.version},
            actor=actor,
        )

    moved = {
        "customers.customernote": _ids(CustomerNote.objects.filter(customer=merged)),
        "customers.customeractivity": _ids(CustomerActivity.objects.filter(customer=merged)),
        "customers.customerorder": _ids(CustomerOrder.objects.filter(customer=merged)),
        "customers.supportcase": _ids(SupportCase.objects.filter(customer=merged)),
        "customers.loyalty_points": merged.loyalty_points,
    }
    _move_notes(moved["customers.customernote"], to=survivor, actor=actor, reason=label)
    CustomerActivity.objects.filter(pk__in=moved["customers.customeractivity"]).update(customer=survivor)
    CustomerOrder.objects.filter(pk__in=moved["customers.customerorder"]).update(customer=survivor)
    SupportCase.objects.filter(pk__in=moved["customers.supportcase"]).update(customer=survivor)
    pair = _pair_filter(survivor.pk, merged.pk)
    others = DuplicateCandidate.objects.filter(Q(customer=merged) | Q(other=merged), status=DuplicateStatus.OPEN)
    moved["customers.duplicatecandidate"] = _ids(others.exclude(pair))
    DuplicateCandidate.objects.filter(pair).update(
        status=DuplicateStatus.MERGED, resolved_at=now, resolved_by=actor.label
    )
    others.update(status=DuplicateStatus.DISMISSED, resolved_at=now, resolved_by=f"{actor.label} ({label})")

    merge = CustomerMerge.objects.create(
        survivor=survivor,
        merged=merged,
        field_choices=choices,
        survivor_before=survivor_before,
        merged_before=merged_before,
        survivor_after={name: json_value(getattr(survivor, name)) for name in changed},
        moved=moved,
        reason=reason,
        merged_by=actor.label,
        merged_at=now,
        undo_until=now + timedelta(days=settings.CUSTOMER_MERGE_UNDO_DAYS),
    )
    customer_metrics_recompute(
        actor=actor,
        customer_ids=[survivor.pk, merged.pk],
        loyalty_deltas={survivor.pk: merged.loyalty_points, merged.pk: -merged.loyalty_points},
    )
    events.record(
        event_type=events.CUSTOMER_MERGED,
        subject=survivor.pk,
        data={
            "customer_id": str(survivor.pk),
            "merge_id": str(merge.pk),
            "survivor_id": str(survivor.pk),
            "merged_id": str(merged.pk),
            "fields_from_merged": changed,
        },
        actor=actor,
    )
    duplicates_detect(customer_id=survivor.pk)
    invalidate_customer_on_commit(survivor.pk)
    invalidate_customer_on_commit(merged.pk)
    merge.refresh_from_db()
    return merge


def merged_before_customer(merged: Customer, before: dict[str, Any]) -> Customer:
    """The merged customer as it was (its email and external id are gone from the row by now)."""
    as_was = Customer(pk=merged.pk)
    for name in mergeable_fields():
        setattr(as_was, name, _from_json(name, before[name]))
    return as_was


def _pair_filter(first, second) -> Q:
    low, high = sorted((first, second), key=str)
    return Q(customer_id=low, other_id=high)


def customer_merge_note_moved(*, merge_id: UUID | str, key: str, value: Any) -> None:
    """For the apps' merge subscribers: remember what they moved (`<app>.<table>` → ids or details)."""
    merge = CustomerMerge.objects.select_for_update().get(pk=merge_id)
    merge.moved = {**merge.moved, key: value}
    merge.save(update_fields=["moved"])


def merge_get(merge_id: UUID | str) -> CustomerMerge:
    try:
        return CustomerMerge.objects.get(pk=merge_id)
    except (CustomerMerge.DoesNotExist, ValueError, TypeError):
        raise MergeNotFound(f"No merge {merge_id}.") from None


def merge_undoable(merge: CustomerMerge, *, now=None) -> bool:
    return merge.undone_at is None and (now or timezone.now()) <= merge.undo_until


@transaction.atomic
def customer_merge_undo(*, actor: Actor, merge_id: UUID | str, reason: str = "") -> CustomerMerge:
    """Bring the merged customer back as it was and move its rows back (within the undo window)."""
    from customers import services
    from customers.messaging.effects import customer_metrics_recompute

    try:
        merge = CustomerMerge.objects.select_for_update().get(pk=merge_id)
    except (CustomerMerge.DoesNotExist, ValueError, TypeError):
        raise MergeNotFound(f"No merge {merge_id}.") from None
    if merge.undone_at is not None:
        raise Conflict("This merge was already undone.", code="MERGE_ALREADY_UNDONE")
    now = timezone.now()
    if now > merge.undo_until:
        raise Conflict(
            f"A merge can be undone for {settings.CUSTOMER_MERGE_UNDO_DAYS} days; this one no longer.",
            code="MERGE_UNDO_WINDOW_PASSED",
        )
    locked = _lock_pair(merge.survivor_id, merge.merged_id)
    survivor, merged = locked[str(merge.survivor_id)], locked[str(merge.merged_id)]
    if merged.status != CustomerStatus.MERGED or merged.merged_into_id != survivor.pk:
        raise Conflict("The merged customer is no longer merged into the survivor.", code="MERGE_NOT_UNDOABLE")
    if survivor.status in _GONE:
        raise Conflict(f"The survivor is {survivor.status} now; the merge cannot be undone.", code="MERGE_NOT_UNDOABLE")
    label = f"undo of the merge of {merged.customer_number} into {survivor.customer_number}"

    # The survivor gets back what the merge gave it, unless it was changed since (a later edit wins).
    restore = {
        name: _from_json(name, merge.survivor_before[name])
        for name, after in merge.survivor_after.items()
        if json_value(getattr(survivor, name)) == after
    }
    restored = sorted(name for name, value in restore.items() if getattr(survivor, name) != value)
    if restored:
        for name in restored:
            setattr(survivor, name, restore[name])
        survivor.profile_completeness = services._profile_completeness(survivor)
        survivor.updated_at = now
        survivor.version += 1
        stamp(survivor, actor, f"{label}: " + ", ".join(restored))
        services._save_guarding_uniques(survivor)
        events.record(
            event_type=events.CUSTOMER_UPDATED,
            subject=survivor.pk,
            data={"customer_id": str(survivor.pk), "changed_fields": restored, "version": survivor.version},
            actor=actor,
        )

    before = merge.merged_before
    email = _from_json("email", before["email"])
    if services._email_taken(email, excluding=merged.pk):
        raise EmailAlreadyExists()
    merged.email = email
    merged.external_id = _from_json("external_id", before["external_id"])
    merged.status = before["status"]
    merged.merged_into = None
    merged.updated_at = now
    merged.version += 1
    stamp(merged, actor, label)
    services._save_guarding_uniques(merged)
    CustomerStatusChange.objects.create(
        customer=merged,
        from_status=CustomerStatus.MERGED,
        to_status=merged.status,
        reason=(reason or "Merge undone")[:1000],
        actor=actor.label,
    )

    moved = merge.moved
    mine = {"customer": survivor}
    _move_notes(
        _ids(CustomerNote.objects.filter(pk__in=moved.get("customers.customernote", []), **mine)),
        to=merged,
        actor=actor,
        reason=label,
    )
    CustomerActivity.objects.filter(pk__in=moved.get("customers.customeractivity", []), **mine).update(customer=merged)
    CustomerOrder.objects.filter(pk__in=moved.get("customers.customerorder", []), **mine).update(customer=merged)
    SupportCase.objects.filter(pk__in=moved.get("customers.supportcase", []), **mine).update(customer=merged)
    DuplicateCandidate.objects.filter(_pair_filter(survivor.pk, merged.pk)).update(
        status=DuplicateStatus.OPEN, resolved_at=None, resolved_by=""
    )
    DuplicateCandidate.objects.filter(pk__in=moved.get("customers.duplicatecandidate", [])).update(
        status=DuplicateStatus.OPEN, resolved_at=None, resolved_by=""
    )
    points = int(moved.get("customers.loyalty_points", 0))
    customer_metrics_recompute(
        actor=actor, customer_ids=[survivor.pk, merged.pk], loyalty_deltas={survivor.pk: -points, merged.pk: points}
    )

    merge.undone_at = now
    merge.undone_by = actor.label
    merge.save(update_fields=["undone_at", "undone_by"])
    events.record(
        event_type=events.CUSTOMER_MERGE_UNDONE,
        subject=survivor.pk,
        data={
            "customer_id": str(survivor.pk),
            "merge_id": str(merge.pk),
            "survivor_id": str(survivor.pk),
            "merged_id": str(merged.pk),
        },
        actor=actor,
    )
    invalidate_customer_on_commit(survivor.pk)
    invalidate_customer_on_commit(merged.pk)
    return merge
