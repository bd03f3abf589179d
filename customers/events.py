"""Domain events of the customers app and the outbox writer every app uses.

`record` writes the event as an outbox row inside the caller's transaction: the change and its
event commit together or not at all. A relay publishes the rows to the broker later.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
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
    From `record_from_rows` (set-based) the events are `RecordedEvent`s: the same fields, read-only.
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


def _lock_subjects(subjects: list[str]) -> set[str]:
    """Lock the subjects' customer rows until commit; returns those whose processing is restricted.

    The lock makes a customer's events commit in the order they are stamped (occurred_at, sequence):
    a second transaction recording for the same customer waits here until the first one commits,
    so the relay never sees an event before an earlier one of its customer. `FOR NO KEY UPDATE`
    does not block inserts that reference the customer (foreign keys take `KEY SHARE`).
    """
    candidates = sorted({subject for subject in subjects if _is_uuid(subject)})
    if not candidates:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, processing_restricted FROM customers_customer WHERE id = ANY(%s::uuid[])"
            " ORDER BY id FOR NO KEY UPDATE",
            [candidates],
        )
        return {str(pk) for pk, restricted in cursor.fetchall() if restricted}


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
    restricted = _lock_subjects([str(subject) for subject, _ in items])
    now = timezone.now()  # after the lock: later than every event of these customers committed before
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


# ---------------------------------------------------------------- set-based recording

# A version 7 UUID (RFC 9562: milliseconds since the epoch, then random bits): unique like any event
# id, but time-ordered, so a set-based insert of many events appends to the primary key index
# instead of touching a random page of it for every row.
EVENT_ID_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), "
    "52, 1), 53, 1), 'hex')::uuid"
)
# `_ids_only` in SQL, for the payload `d` of a processing-restricted customer's event.
_IDS_ONLY_SQL = (
    "(SELECT coalesce(jsonb_object_agg(x.k, x.v), '{{}}'::jsonb) FROM jsonb_each({d}) AS x(k, v) "
    "WHERE x.k = 'id' OR right(x.k, 3) = '_id' OR right(x.k, 4) = '_ids' OR jsonb_typeof(x.v) = 'boolean')"
)
# The activity timeline's summary (`customers.activity.EVENT_ACTIVITY`) in SQL over the payload `d`
# (personal fields removed), for the event types recorded set-based. A test compares each with
# its Python twin.
ACTIVITY_SUMMARY_SQL: dict[str, str] = {
    "customer.segment.assigned.v1": "'Joined segment ' || coalesce(d->>'segment_code', '?')",
    "customer.segment.removed.v1": "'Left segment ' || coalesce(d->>'segment_code', '?')",
    "customer.tier.changed.v1": (
        "'Tier ' || coalesce(nullif(d->>'from_tier', ''), 'none') || ' → ' || coalesce(d->>'to_tier', '?')"
    ),
}
# How many events of each kind a set-based statement hands back to be checked against the schema.
SET_BASED_SAMPLE = 3


class EventContractError(RuntimeError):
    """Events written set-based do not match their schema: the statement is rolled back."""


@dataclass(frozen=True)
class RowEvents:
    """One `event_type` event per row of `rows` (a CTE or table of the statement, aliased `r`).

    `subject` is SQL over `r` without parameters: the id of an existing customer, which the caller
    vouches for (its timeline entry is written without looking the customer up, which on a big
    statement cost a hash join over every customer), `data` SQL over `r` giving the
    payload as jsonb (its parameters, then those of `restricted`, in `params`).
    `restricted` is SQL over `r` saying whether the customer's processing is restricted (their event
    then carries identifiers only, as `record_many` does); None looks it up in customers_customer.
    """

    event_type: str
    rows: str
    subject: str
    data: str
    params: Sequence[Any] = ()
    restricted: str | None = None


def _per_event_subscribers(event_type: str) -> tuple[list[Handler], list[Handler]]:
    """(the timeline's, every other) per-event subscriber of the type; batch subscribers are not per event."""
    from customers import activity

    handlers = [*_in_transaction.get(event_type, ()), *_after_commit.get(event_type, ())]
    timeline = [handler for handler in handlers if handler is activity._on_event]
    return timeline, [handler for handler in handlers if handler is not activity._on_event]


def set_based_recording_possible(event_type: str) -> bool:
    """Whether `record_from_rows` can record this type: no per-event Python subscriber but the timeline's.

    Batch subscribers (`subscribe_batch`) do not prevent it: they run once per statement.
    """
    return not _per_event_subscribers(event_type)[1]


def _set_based_activity(event_type: str) -> tuple[str, str] | None:
    """(timeline type, summary SQL) when the timeline subscribes to the type; None when nothing does.

    Python subscribers cannot run per row of a set-based statement: any other one is an error.
    """
    from customers import activity

    timeline, others = _per_event_subscribers(event_type)
    if others:
        raise RuntimeError(f"{event_type} has subscribers that set-based recording cannot run: {others}")
    if not timeline:
        return None
    if event_type not in ACTIVITY_SUMMARY_SQL:
        raise RuntimeError(f"{event_type} is on the timeline but has no ACTIVITY_SUMMARY_SQL for set-based recording")
    return activity.EVENT_ACTIVITY[event_type][0], ACTIVITY_SUMMARY_SQL[event_type]


def _row_events_sql(index: int, spec: RowEvents, *, now, metadata: str) -> tuple[str, list]:
    from customers.messaging.schemas import schema_for

    name = f"_events_{index}"
    if spec.restricted is None:
        rows = f"{spec.rows} r LEFT JOIN customers_customer rc ON rc.id = ({spec.subject})::uuid"
        restricted = "coalesce(rc.processing_restricted, false)"
    else:
        rows, restricted = f"{spec.rows} r", spec.restricted
    sql = f"""
    {name} AS (
        INSERT INTO customers_outboxevent
            (event_id, event_type, occurred_at, source, subject, data, metadata, published_at, attempts, last_error)
        SELECT {EVENT_ID_SQL}, %s, %s, %s, e.subject,
               CASE WHEN e.restricted THEN {_IDS_ONLY_SQL.format(d="e.data")} ELSE e.data END,
               %s::jsonb, NULL, 0, ''
        FROM (SELECT ({spec.subject})::text AS subject, ({spec.data}) AS data, ({restricted}) AS restricted
              FROM {rows}) AS e
        RETURNING event_id, event_type, occurred_at, source, subject, data, metadata
    )"""  # noqa: S608 - SQL fragments are the caller's code, values are parameters
    # In the order of the text: the envelope, then the fragments' own (data, restriction).
    params: list[Any] = [spec.event_type, now, settings.EVENT_SOURCE, metadata, *spec.params]
    timeline = _set_based_activity(spec.event_type)
    if timeline is not None:
        schema = schema_for(spec.event_type)
        personal = sorted(schema.personal_fields) if schema else []
        activity_type, summary = timeline
        sql += f""",
    {name}_timeline AS (
        INSERT INTO customers_customeractivity
            (customer_id, type, occurred_at, source, summary, data, event_id, created_at)
        SELECT o.subject::uuid, %s, o.occurred_at, o.source, left({summary}, 300), d, o.event_id, now()
        FROM {name} o
        CROSS JOIN LATERAL (SELECT o.data - %s::text[] AS d) AS kept
        ON CONFLICT (event_id) DO NOTHING
    )"""  # noqa: S608 - as above
        params += [activity_type, personal]
    return sql, params


def record_from_rows(
    *,
    ctes: str,
    params: Sequence[Any],
    events: Sequence[RowEvents],
    select: str,
    select_params: Sequence[Any] = (),
    actor: Actor | None = None,
) -> tuple:
    """Run `WITH <ctes>, <the events' CTEs> <select>` as one statement; returns the row of `select`.

    For work over many customers (a segment recalculated, every tier): the caller's CTEs change
    rows and return them, and each `RowEvents` writes one outbox event per row of one of them, in
    the same statement and so the same transaction, with the envelope `record_many` writes
    (a time-ordered event id, source, correlation id and actor in the metadata), a processing-
    restricted customer's payload cut to identifiers, and the activity timeline entry that the
    timeline's subscriber adds (personal fields left out, a redelivery adding nothing).
    A few events of each kind are handed back and checked against their schema: a payload that
    breaks it raises `EventContractError` (the caller's transaction rolls back).
    Batch subscribers of a type (`subscribe_batch`) get all its events of the statement after commit,
    as `record_many` gives them.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("Events are recorded inside the transaction of the change they describe.")
    from customers.messaging import schemas

    metadata = {"correlation_id": current_correlation_id()}
    if actor is not None:
        metadata["actor"] = actor.label
    now = timezone.now()
    parts, event_params, samples = [], [], []
    for index, spec in enumerate(events):
        sql, values = _row_events_sql(index, spec, now=now, metadata=json.dumps(metadata))
        parts.append(sql)
        event_params += values
        sample = f"(SELECT * FROM _events_{index} LIMIT {SET_BASED_SAMPLE}) AS s"  # noqa: S608 - our names
        sample = f"(SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]'::jsonb) FROM {sample})"  # noqa: S608
        if _after_commit_batch.get(spec.event_type):  # and every event, briefly, for the batch subscribers
            every = f"(SELECT json_agg(json_build_array(e.event_id, e.subject, e.data)) FROM _events_{index} e)"  # noqa: S608
            sample = f"json_build_array({sample}, coalesce({every}, '[]'::json))"
        samples.append(sample)
    with_events = f",{','.join(parts)}" if parts else ""
    sampled = ", ".join(samples) or "NULL"
    statement = f"WITH {ctes}{with_events} SELECT q.*, {sampled} FROM ({select}) AS q"  # noqa: S608 - callers' SQL
    with connection.cursor() as cursor:
        cursor.execute(statement, [*params, *event_params, *select_params])
        row = cursor.fetchone()
    width = len(row) - max(len(events), 1)
    problems = set()
    returned = [json.loads(sample) if isinstance(sample, str) else sample or [] for sample in row[width:]]
    every: dict[int, list] = {}
    for index, spec in enumerate(events):
        if _after_commit_batch.get(spec.event_type):
            returned[index], every[index] = returned[index]
    for spec, sample in zip(events, returned, strict=False):
        for event in sample:
            wire = {key: event[key] for key in ("event_id", "event_type", "occurred_at", "source", "subject")}
            wire |= {"data": event["data"], "metadata": event["metadata"]}
            problems.update(f"{spec.event_type}: {error}" for error in schemas.envelope_errors(wire))
            errors = schemas.validation_errors(spec.event_type, event["data"])
            problems.update(f"{spec.event_type}: {error}" for error in errors)
    if problems:
        raise EventContractError("Events break their schema: " + "; ".join(sorted(problems)))
    for index, rows in every.items():
        if rows:
            event_type = events[index].event_type
            recorded = [
                RecordedEvent(UUID(event_id), event_type, now, settings.EVENT_SOURCE, subject, data, metadata)
                for event_id, subject, data in rows
            ]
            for handler in _after_commit_batch.get(event_type, ()):
                transaction.on_commit(lambda h=handler, recorded=recorded: h(events=recorded, actor=actor))
    return tuple(row[:width])


class RecordedEvent(NamedTuple):
    """An event a set-based statement recorded, as its batch subscribers get it (an OutboxEvent's fields)."""

    event_id: UUID
    event_type: str
    occurred_at: Any
    source: str
    subject: str
    data: dict
    metadata: dict
