"""Consent's part of a customer merge (subscribers to customers' merge events, wired in `ConsentConfig.ready`).

Consent records are append-only proof, so nothing is moved: every record stays with the customer
whose answer it records (the merged customer keeps its own). Instead, for each purpose where the
merged customer's *decision* (granted, denied, revoked) is newer than the survivor's state, the
survivor gets a new record carrying it over through an allowed move of the state machine: a grant
is granted (same wording, the original validity; not if it has lapsed), a refusal or withdrawal
withdraws the survivor's grant (revoked) or refuses an open question (denied). The moment it took
effect is `occurred_at`, the original trigger is kept, and the reason names the merge. The person's
most recent decision wins; not_requested, pending and expired are not decisions and carry nothing.

On undo, a carried-over grant that is still the survivor's current state is withdrawn with a new
`revoked` record, so an undone merge never leaves the survivor holding a consent another record
gave. A carried-over refusal stays: it never permits anything, and only the person may grant again.
"""

from __future__ import annotations

from uuid import UUID

from django.utils import timezone

from consent.models import ConsentRecord, ConsentState, ConsentTrigger
from consent.services._common import (
    NOTHING,
    PREFERENCE_FIELD_BY_PURPOSE,
    SYSTEM_ACTOR,
    Origin,
    S,
    append_change,
    locked_state,
    record_event,
    source_for,
    transition_allowed,
    write_preferences,
)
from customers import events
from customers import selectors as customer_selectors
from customers import services as customer_services
from customers.actor import Actor

KEY = "consent.consentrecord"


# What a person decided. not_requested and pending are not decisions, and expired is a lapse:
# none of them is carried over (a merged record's newer "not asked" must not undo a grant).
DECISIONS = (S.GRANTED, S.DENIED, S.REVOKED)


def _carried_status(theirs: str, ours: str) -> str | None:
    """The survivor's new state when the merged customer's newer decision is carried over, always
    through an allowed move; None when the survivor already agrees."""
    if theirs == S.GRANTED:
        return None if ours == S.GRANTED else S.GRANTED
    # A refusal or withdrawal: it withdraws a grant, refuses an open question, or changes nothing.
    if ours == S.GRANTED:
        return S.REVOKED
    if ours in (NOTHING, S.NOT_REQUESTED, S.PENDING):
        return S.DENIED
    return None


def on_customer_merged(*, event, actor: Actor | None = None) -> None:
    actor = actor or SYSTEM_ACTOR
    survivor, merged = UUID(event.data["survivor_id"]), UUID(event.data["merged_id"])
    merge_id = event.data["merge_id"]
    number = customer_selectors.customer_get(actor=SYSTEM_ACTOR, customer_id=merged).customer_number
    theirs = ConsentState.objects.filter(customer_id=merged, status__in=DECISIONS).select_related(
        "purpose", "last_record"
    )
    ours = {
        state.purpose_id: state
        for state in ConsentState.objects.select_for_update(of=("self",))
        .select_related("policy_version")
        .filter(customer_id=survivor)
    }
    now = timezone.now()
    carried, preferences = [], {}
    for state in theirs.order_by("purpose__display_order"):
        current = ours.get(state.purpose_id)
        if current is not None and current.updated_at >= state.updated_at:
            continue  # the survivor's own decision is the newer one
        if state.status == S.GRANTED and state.valid_until is not None and state.valid_until <= now:
            continue  # a grant that has lapsed carries nothing
        previous = current.status if current is not None else NOTHING
        status = _carried_status(state.status, previous)
        if status is None:
            continue
        assert transition_allowed(previous, status), (previous, status)
        granted = status == S.GRANTED
        record = ConsentRecord(
            customer_id=survivor,
            purpose=state.purpose,
            status=status,
            previous_status=previous,
            # A withdrawal names the wording of the grant it withdraws; otherwise the merged customer's.
            policy_version_id=current.policy_version_id if status == S.REVOKED else state.policy_version_id,
            implicit=state.last_record.implicit if granted else False,
            trigger=state.last_record.trigger,
            occurred_at=state.updated_at,
            recorded_at=now,
            valid_until=state.valid_until if granted else None,
            source=state.source,
            actor=actor.label,
            reason=f"Carried over from merged customer {number} (merge {merge_id})",
        )
        record.save()
        if current is None:
            current = ConsentState(customer_id=survivor, purpose=state.purpose)
        current.status = status
        current.policy_version_id = record.policy_version_id
        current.source = state.source
        current.granted_at = state.granted_at if granted else None
        current.valid_until = record.valid_until
        current.updated_at = state.updated_at
        current.last_record = record
        current.save()
        record_event(record, actor)
        carried.append({"purpose": state.purpose.code, "record_id": str(record.pk), "status": status})
        field = PREFERENCE_FIELD_BY_PURPOSE.get(state.purpose.code)
        if field is not None:
            preferences[field] = granted
    customer_services.customer_merge_note_moved(merge_id=merge_id, key=KEY, value=carried)
    write_preferences(actor=actor, customer_id=survivor, changes=preferences)


def on_merge_undone(*, event, actor: Actor | None = None) -> None:
    actor = actor or SYSTEM_ACTOR
    survivor = UUID(event.data["survivor_id"])
    merge = customer_selectors.merge_get(event.data["merge_id"])
    now = timezone.now()
    preferences = {}
    for item in merge.moved.get(KEY, []):
        if item["status"] != S.GRANTED:
            continue
        state = (
            ConsentState.objects.select_for_update(of=("self",))
            .select_related("purpose")
            .filter(customer_id=survivor, purpose__code=item["purpose"])
            .first()
        )
        if state is None or str(state.last_record_id) != item["record_id"]:
            continue  # the survivor decided again since: that decision stands
        state = locked_state(survivor, state.purpose)
        append_change(
            actor=actor,
            customer_id=survivor,
            purpose=state.purpose,
            state=state,
            status=S.REVOKED,
            version=state.policy_version,
            origin=Origin(
                source=source_for(actor),
                reason=f"Merge {merge.pk} undone: the consent carried over from the other record is withdrawn",
            ),
            trigger=ConsentTrigger.CHOICE,
            now=now,
        )
        field = PREFERENCE_FIELD_BY_PURPOSE.get(item["purpose"])
        if field is not None:
            preferences[field] = False
    write_preferences(actor=actor, customer_id=survivor, changes=preferences)


def subscribe() -> None:
    events.subscribe(events.CUSTOMER_MERGED, on_customer_merged)
    events.subscribe(events.CUSTOMER_MERGE_UNDONE, on_merge_undone)
