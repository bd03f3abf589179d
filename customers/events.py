"""Domain events of the customers app and the outbox writer every app uses.

`record` writes the event as an outbox row inside the caller's transaction: the change and its
event commit together or not at all. A relay publishes the rows to the broker later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from customers.actor import Actor
from customers.context import current_correlation_id
from customers.models import OutboxEvent

CUSTOMER_CREATED = "customer.created.v1"
CUSTOMER_UPDATED = "customer.updated.v1"
CUSTOMER_PREFERENCES_UPDATED = "customer.preferences.updated.v1"
CUSTOMER_STATUS_CHANGED = "customer.status_changed.v1"
CUSTOMER_DEACTIVATED = "customer.deactivated.v1"
CUSTOMER_RESTRICTION_CHANGED = "customer.restriction_changed.v1"
# Purchase metrics, loyalty points or satisfaction changed (fed by inbound events; segments re-evaluate).
CUSTOMER_METRICS_UPDATED = "customer.metrics.updated.v1"
# The identity service deleted the user: privacy subscribes and files the erasure request.
CUSTOMER_ERASURE_REQUESTED = "customer.erasure_requested.v1"
# Two records of one person became one (survivor and merged ids). Higher apps move their rows to the
# survivor in an in-transaction subscriber and note the ids they moved (`customer_merge_note_moved`);
# on undo they move them back.
CUSTOMER_MERGED = "customer.merged.v1"
CUSTOMER_MERGE_UNDONE = "customer.merge_undone.v1"
# Notes (customers.notes): the events name the note and its kind, never its text.
CUSTOMER_NOTE_ADDED = "customer.note.added.v1"
CUSTOMER_NOTE_UPDATED = "customer.note.updated.v1"
CUSTOMER_NOTE_DELETED = "customer.note.deleted.v1"


Handler = Callable[..., None]
_in_transaction: dict[str, list[Handler]] = defaultdict(list)
_after_commit: dict[str, list[Handler]] = defaultdict(list)
_after_commit_batch: dict[str, list[Handler]] = defaultdict(list)


def subscribe_batch(event_type: str, handler: Handler) -> None:
    """After commit, once per `record_many` call: `handler(events=[<OutboxEvent>, ...], actor=...)`.

    For derived work on many customers at once: event ingestion records one
    `customer.metrics.updated.v1` per customer for a whole batch of hundreds, and a handler that
    queues one task per event would cost more than the batch itself. Queue one task with the ids.
    """
    if handler not in _after_commit_batch[event_type]:
        _after_commit_batch[event_type].append(handler)


def subscribe(event_type: str, handler: Handler, *, after_commit: bool = False) -> None:
    """Let a higher app react to this app's events without being imported by it.

    In-transaction handlers run inside the writer's transaction (for facts that must never
    disagree) and their errors roll the whole change back. After-commit handlers run once the
    change is committed and should only queue a Celery task with ids (derived work).
    Handlers are called as `handler(event=<OutboxEvent>, actor=<Actor|None>)`. Register them in
    the subscribing app's `AppConfig.ready`.
    """
    handlers = (_after_commit if after_commit else _in_transaction)[event_type]
    if handler not in handlers:
        handlers.append(handler)


def _restricted_subjects(subjects: list[str]) -> set[str]:
    from customers.models import Customer

    candidates = [subject for subject in subjects if _is_uuid(subject)]
    if not candidates:
        return set()
    return {
        str(pk)
        for pk in Customer.objects.filter(pk__in=candidates, processing_restricted=True).values_list("pk", flat=True)
    }


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _ids_only(data: dict) -> dict:
    """What a restricted customer's events may say: identifiers, nothing about the person."""
    return {
        key: value
        for key, value in data.items()
        if key == "id" or key.endswith(("_id", "_ids")) or isinstance(value, bool)
    }


def record_many(*, event_type: str, items: list[tuple[object, dict]], actor: Actor | None = None) -> list[OutboxEvent]:
    """Record one event per (subject, data) pair with a single INSERT; subscribers run for each."""
    if not connection.in_atomic_block:
        raise RuntimeError("Events are recorded inside the transaction of the change they describe.")
    metadata = {"correlation_id": current_correlation_id()}
    if actor is not None:
        metadata["actor"] = actor.label
    restricted = _restricted_subjects([str(subject) for subject, _ in items])
    now = timezone.now()
    recorded = OutboxEvent.objects.bulk_create(
        [
            OutboxEvent(
                event_type=event_type,
                occurred_at=now,
                source=settings.EVENT_SOURCE,
                subject=str(subject),
                data=_ids_only(data) if str(subject) in restricted else data,
                metadata=metadata,
            )
            for subject, data in items
        ]
    )
    for event in recorded:
        for handler in _in_transaction.get(event_type, ()):
            handler(event=event, actor=actor)
        for handler in _after_commit.get(event_type, ()):
            transaction.on_commit(lambda handler=handler, event=event: handler(event=event, actor=actor))
    for handler in _after_commit_batch.get(event_type, ()):
        transaction.on_commit(lambda handler=handler: handler(events=recorded, actor=actor))
    return recorded


def record(*, event_type: str, subject: object, data: dict, actor: Actor | None = None) -> OutboxEvent:
    """Record one event in the current transaction (see module docstring)."""
    (event,) = record_many(event_type=event_type, items=[(subject, data)], actor=actor)
    return event


def envelope(event: OutboxEvent) -> dict:
    """The wire form of an event, as the relay publishes it."""
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "occurred_at": event.occurred_at.isoformat(),
        "source": event.source,
        "subject": event.subject,
        "data": event.data,
        "metadata": event.metadata,
    }
