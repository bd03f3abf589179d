"""Notes on a customer: written by reps and compliance in the admin, and by other services through the API.

Compliance notes are seen only by holders of `customers.view_compliance_note` (the Compliance and
Administrator groups): the rule is applied to the queryset every reader starts from
(`notes_visible_to`), so no screen or endpoint can show one by forgetting a template check. API
tokens never see them; a customer's own token sees no notes at all. History (who changed what) is
kept by simple-history; events name the note, never its text.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from customers import events
from customers.actor import Actor
from customers.errors import Forbidden, InvalidStatusTransition, NotFound, ValidationFailed
from customers.history import stamp
from customers.models import Customer, CustomerNote, CustomerStatus, NoteKind
from customers.selectors import customer_get

NOTE_MAX_LENGTH = 10_000
NOTE_FIELDS = ("kind", "text", "is_pinned")

CUSTOMER_NOTE_ADDED = events.CUSTOMER_NOTE_ADDED
CUSTOMER_NOTE_UPDATED = events.CUSTOMER_NOTE_UPDATED
CUSTOMER_NOTE_DELETED = events.CUSTOMER_NOTE_DELETED


class NoteNotFound(NotFound):
    code = "NOTE_NOT_FOUND"

    def __init__(self, note_id: object = None) -> None:
        super().__init__(f"Note {note_id} not found." if note_id is not None else "Note not found.")


def may_see_compliance_notes(actor: Actor) -> bool:
    if actor.kind == "system":
        return True
    if actor.kind == "staff":
        return bool(actor.user and actor.user.has_perm("customers.view_compliance_note"))
    return False  # API tokens: other services never see compliance notes


def notes_visible_to(actor: Actor) -> QuerySet[CustomerNote]:
    """Every note the actor may read (the base of every list, page and lookup of notes)."""
    if actor.customer_id is not None:
        return CustomerNote.objects.none()  # a customer's own token never sees staff notes
    notes = CustomerNote.objects.all()
    if not may_see_compliance_notes(actor):
        notes = notes.exclude(kind=NoteKind.COMPLIANCE)
    return notes


def note_history_visible_to(actor: Actor) -> QuerySet:
    """Every history row of a note the actor may read: the same rule as `notes_visible_to`, per version.

    Without the compliance permission, a version that was a compliance note is hidden, and so is every
    version of a note that is a compliance note now (its older versions belong to it).
    """
    history = CustomerNote.history.all()
    if actor.customer_id is not None:
        return history.none()
    if not may_see_compliance_notes(actor):
        compliance_now = CustomerNote.objects.filter(kind=NoteKind.COMPLIANCE).values("id")
        history = history.exclude(kind=NoteKind.COMPLIANCE).exclude(id__in=compliance_now)
    return history


def customer_notes(*, actor: Actor, customer_id: UUID | str) -> QuerySet[CustomerNote]:
    """One customer's notes the actor may read, pinned first, newest first."""
    return notes_visible_to(actor).filter(customer_id=customer_id).order_by("-is_pinned", "-created_at", "-id")


def _writable_customer(actor: Actor, customer_id: UUID | str) -> Customer:
    if actor.customer_id is not None:
        raise Forbidden("A customer's own token cannot read or write staff notes.")
    customer = customer_get(actor=actor, customer_id=customer_id)
    if customer.status in (CustomerStatus.ERASED, CustomerStatus.MERGED):
        raise InvalidStatusTransition(
            f"A {customer.status} customer's notes cannot change.", code=f"CUSTOMER_{customer.status.upper()}"
        )
    return customer


def _clean(values: dict[str, Any], *, actor: Actor) -> dict[str, Any]:
    unknown = set(values) - set(NOTE_FIELDS)
    if unknown:
        raise ValidationFailed("Unknown fields.", errors={name: ["Not a note field."] for name in sorted(unknown)})
    cleaned = dict(values)
    if "text" in cleaned:
        text = (cleaned["text"] or "").strip()
        if not text:
            raise ValidationFailed("A note needs text.", errors={"text": ["This field is required."]})
        if len(text) > NOTE_MAX_LENGTH:
            raise ValidationFailed(
                "The note is too long.", errors={"text": [f"At most {NOTE_MAX_LENGTH} characters."]}
            )
        cleaned["text"] = text
    if "kind" in cleaned:
        if cleaned["kind"] not in NoteKind.values:
            raise ValidationFailed(
                "Unknown note kind.", errors={"kind": [f"One of: {', '.join(NoteKind.values)}."]}
            )
        if cleaned["kind"] == NoteKind.COMPLIANCE and not may_see_compliance_notes(actor):
            raise Forbidden("Only the Compliance and Administrator groups write compliance notes.")
    if "is_pinned" in cleaned:
        cleaned["is_pinned"] = bool(cleaned["is_pinned"])
    return cleaned


def _payload(note: CustomerNote, changed: list[str] | None = None) -> dict:
    data = {
        "customer_id": str(note.customer_id),
        "note_id": note.pk,
        "kind": note.kind,
        "is_pinned": note.is_pinned,
    }
    if changed is not None:
        data["changed_fields"] = changed
    return data


@transaction.atomic
def note_create(
    *, actor: Actor, customer_id: UUID | str, text: str, kind: str = NoteKind.GENERAL, is_pinned: bool = False
) -> CustomerNote:
    customer = _writable_customer(actor, customer_id)
    cleaned = _clean({"text": text, "kind": kind, "is_pinned": is_pinned}, actor=actor)
    now = timezone.now()
    note = CustomerNote(
        customer=customer,
        author=actor.user if actor.kind == "staff" else None,
        written_by=actor.label,
        created_at=now,
        updated_at=now,
        **cleaned,
    )
    stamp(note, actor, "pinned note added" if note.is_pinned else "note added")
    note.save()
    events.record(event_type=CUSTOMER_NOTE_ADDED, subject=customer.pk, data=_payload(note), actor=actor)
    return note


def _locked_note(actor: Actor, customer_id: UUID, note_id: int | str) -> CustomerNote:
    try:
        return notes_visible_to(actor).select_for_update().get(customer_id=customer_id, pk=note_id)
    except (CustomerNote.DoesNotExist, ValueError, TypeError):
        raise NoteNotFound(note_id) from None


@transaction.atomic
def note_update(*, actor: Actor, customer_id: UUID | str, note_id: int | str, changes: dict[str, Any]) -> CustomerNote:
    """Change the text, kind or pin of a note; the history keeps every version with who wrote it."""
    customer = _writable_customer(actor, customer_id)
    note = _locked_note(actor, customer.pk, note_id)
    cleaned = _clean(changes, actor=actor)
    changed = sorted(name for name, value in cleaned.items() if getattr(note, name) != value)
    if not changed:
        return note
    for name in changed:
        setattr(note, name, cleaned[name])
    note.updated_at = timezone.now()
    if changed == ["is_pinned"]:
        reason = "pinned" if note.is_pinned else "unpinned"
    else:
        reason = "changed: " + ", ".join(changed)
    stamp(note, actor, reason)
    note.save()
    events.record(event_type=CUSTOMER_NOTE_UPDATED, subject=customer.pk, data=_payload(note, changed), actor=actor)
    return note


def note_pin(*, actor: Actor, customer_id: UUID | str, note_id: int | str, pinned: bool = True) -> CustomerNote:
    return note_update(actor=actor, customer_id=customer_id, note_id=note_id, changes={"is_pinned": pinned})


@transaction.atomic
def note_delete(*, actor: Actor, customer_id: UUID | str, note_id: int | str) -> None:
    """Remove a note; its history stays (with who deleted it) until the customer is erased."""
    customer = _writable_customer(actor, customer_id)
    note = _locked_note(actor, customer.pk, note_id)
    payload = _payload(note)
    stamp(note, actor, "deleted")
    note.delete()
    events.record(event_type=CUSTOMER_NOTE_DELETED, subject=customer.pk, data=payload, actor=actor)
