"""Inbound events: parse, deduplicate in the inbox, apply a whole batch in one transaction, park the rest.

`apply_batch(messages)` is the unit the consumer calls per batch (and the admin per replayed dead
letter). Inside one transaction it

1. inserts every message's `event_id` into the inbox (`ON CONFLICT DO NOTHING`): the ones already
   there are duplicates and change nothing;
2. applies the new ones by family (identity registrations first, so an order for a customer
   registered in the same batch finds it; deletions last), set-based (see `effects`);
3. parks what could not be applied (a rule of ours refused it) in the dead-letter table, and takes
   those out of the inbox again so a replay can apply them later.

Events that overtake their customer (an order, a case, points, or the identity deletion itself
before `identity.user.registered.v1`) are parked as `WAITING_FOR_CUSTOMER`. The batch that creates
or links that customer takes them back (`_revive_waiting`): into the inbox, through the same
families, in the same transaction, and marks their dead letters replayed. So a deletion that came
first leaves the registered customer deactivated with its `customer.erasure_requested.v1`, and the
metrics come out as if the events had arrived in order. Advisory locks per customer reference
(`effects.lock_references`) make "park as waiting" and "create, then take the waiting ones"
exclude each other, so no event waits for a customer that exists. A customer that appears another
way (e.g. staff set its external id) gets its waiting events through the admin's replay.

A message that is malformed (not JSON, envelope or payload not matching its schema) or of a type
we do not handle never reaches the database effects: it is parked with a reason code and an error
that names paths and keywords, never values. Logs carry ids, types and reason codes only.

An unexpected database error in a batch (a constraint we did not foresee) rolls it back; the batch
is then applied one message per transaction so only the offending message is parked. Transient
errors (connection lost, deadlock) propagate: the consumer retries the batch, unacknowledged.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from prometheus_client import Counter

from customers.actor import Actor
from customers.messaging import effects, schemas
from customers.models import DeadLetter, DeadLetterStatus

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024

inbound_total = Counter("inbound_events", "Inbound events by outcome", ["event_type", "outcome"])

# Event type -> family; families run in this order within a batch.
FAMILIES = {
    "identity_registered": (effects.customer_identity_link, ("identity.user.registered.v1",)),
    "orders": (effects.customer_orders_apply, tuple(effects.ORDER_STATUS)),
    "support": (effects.customer_support_cases_apply, ("support.case.closed.v1",)),
    "loyalty": (effects.customer_loyalty_points_apply, ("loyalty.points.earned.v1", "loyalty.points.redeemed.v1")),
    "identity_deleted": (effects.customer_identity_delete, ("identity.user.deleted.v1",)),
}
HANDLED_TYPES = tuple(event_type for _, types in FAMILIES.values() for event_type in types)
IDENTITY_TYPES = ("identity.user.registered.v1", "identity.user.deleted.v1")
WAITING_FOR_CUSTOMER = effects.WAITING_FOR_CUSTOMER
ARRIVAL_ACTOR_LABEL = "inbound-events: customer arrived"


@dataclass
class Message:
    """One inbound message, parsed; `problem` = (reason, error) when it cannot be applied."""

    body: str
    routing_key: str = ""
    event_id: UUID | None = None
    event_type: str = ""
    source: str = ""
    occurred_at: datetime | None = None
    data: dict | None = None
    problem: tuple[str, str] | None = None
    raw_event_id: str = ""


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    revived: int = 0  # parked messages that waited for their customer, applied in this batch

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.applied + other.applied,
            self.duplicates + other.duplicates,
            self.parked + other.parked,
            self.revived + other.revived,
        )


def _safe_type(value: object) -> str:
    """An event type fit for logs and the dead-letter table (anything else might be personal data)."""
    return value if isinstance(value, str) and schemas.EVENT_TYPE_PATTERN.match(value) else ""


def parse(body: bytes | str, routing_key: str = "") -> Message:
    """Decode and check one message against the envelope and its type's schema, without the database."""
    if isinstance(body, bytes | bytearray | memoryview):
        if len(body) > MAX_BODY_BYTES:
            return Message(
                body="", routing_key=_safe_type(routing_key), problem=("TOO_LARGE", f"over {MAX_BODY_BYTES} bytes")
            )
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return Message(body="", routing_key=_safe_type(routing_key), problem=("INVALID_ENCODING", "not UTF-8"))
    # Kept for the dead-letter table, which (PostgreSQL text) cannot hold NUL: never in valid JSON anyway.
    message = Message(body=body[:MAX_BODY_BYTES].replace("\x00", "\ufffd"), routing_key=_safe_type(routing_key))
    if len(body) > MAX_BODY_BYTES:
        message.problem = ("TOO_LARGE", f"over {MAX_BODY_BYTES} bytes")
        return message
    try:
        envelope = json.loads(body)
    except ValueError:
        message.problem = ("INVALID_JSON", "body is not JSON")
        return message
    if not isinstance(envelope, dict):
        message.problem = ("INVALID_ENVELOPE", "envelope: type")
        return message
    raw_id = envelope.get("event_id")
    message.raw_event_id = str(raw_id)[:100] if isinstance(raw_id, str | int) else ""
    message.event_type = _safe_type(envelope.get("event_type"))
    errors = schemas.envelope_errors(envelope)
    if errors:
        message.problem = ("INVALID_ENVELOPE", "; ".join(errors)[:1000])
        return message
    message.event_id = UUID(envelope["event_id"])
    message.source = envelope["source"]
    message.occurred_at = datetime.fromisoformat(envelope["occurred_at"])
    message.data = envelope["data"]
    if message.event_type not in HANDLED_TYPES:
        message.problem = ("UNKNOWN_EVENT_TYPE", f"not consumed here: {message.event_type or '(invalid name)'}")
        return message
    errors = schemas.validation_errors(message.event_type, message.data)
    if errors:
        message.problem = ("INVALID_PAYLOAD", "; ".join(errors)[:1000])
    return message


def apply_batch(messages: Sequence[Message], *, actor: Actor | None = None) -> Outcome:
    """Apply a batch in one transaction (see the module docstring); never raises for a bad message.

    `actor`: who the changes are recorded for (default: the inbound events' system actor).
    """
    if not messages:
        return Outcome()
    actor = actor or effects.INBOUND_ACTOR
    try:
        with transaction.atomic():
            return _apply(messages, actor=actor)
    except OperationalError:
        raise  # transient (connection lost, deadlock, serialization): the caller retries the batch
    except Exception as error:
        # A constraint nobody foresaw, or a bug: find the message that causes it, park it, go on.
        if len(messages) == 1:
            return _park_alone(messages[0], error)
        logger.warning("inbound batch of %d failed (%s); applying one by one", len(messages), type(error).__name__)
        total = Outcome()
        for message in messages:
            total += apply_batch([message], actor=actor)
        return total


def _park_alone(message: Message, error: Exception) -> Outcome:
    constraint = getattr(getattr(error.__cause__, "diag", None), "constraint_name", None)
    detail = type(error).__name__ + (f" on {constraint}" if constraint else "")
    with transaction.atomic():
        _park([(message, "APPLY_FAILED", detail)])
    return Outcome(parked=1)


def _insert_inbox(messages: list[Message]) -> set[UUID]:
    rows = effects.json_rows([(m.event_id, m.event_type, m.source[:100], m.occurred_at) for m in messages])
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO customers_inboxmessage (event_id, event_type, source, occurred_at, received_at)
            SELECT (e->>0)::uuid, e->>1, e->>2, (e->>3)::timestamptz, now()
            FROM jsonb_array_elements(%s::jsonb) AS e
            ORDER BY 1  -- a stable lock order between concurrent consumers
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
            """,
            [rows],
        )
        return {event_id for (event_id,) in cursor.fetchall()}


def _apply(messages: Sequence[Message], *, actor: Actor) -> Outcome:
    outcome = Outcome()
    to_park = [(m, *m.problem) for m in messages if m.problem]
    unique: dict[UUID, Message] = {}
    for message in messages:
        if not message.problem:
            unique.setdefault(message.event_id, message)
    fresh_ids = _insert_inbox(list(unique.values())) if unique else set()
    fresh = [message for message in unique.values() if message.event_id in fresh_ids]
    outcome.duplicates = len(messages) - len(to_park) - len(fresh)

    batch = effects.Batch()
    _lock_unknown_references(batch, fresh)
    revived: list[tuple[int, Message]] = []  # (dead letter id, message) applied now their customer exists
    pending = list(fresh)
    for name, (apply, types) in FAMILIES.items():
        family = [message for message in pending if message.event_type in types]
        if family:
            apply(actor=actor, batch=batch, messages=family)
        if name == "identity_registered" and batch.arrived:
            revived = _revive_waiting(batch.arrived)
            pending += [message for _, message in revived]
    batch.finish(actor=actor)

    if batch.rejected:
        rejected_ids = [rejection.message.event_id for rejection in batch.rejected]
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM customers_inboxmessage WHERE event_id = ANY(%s::uuid[])", [rejected_ids])
    rejected = {id(r.message) for r in batch.rejected}
    own_rejections = [r for r in batch.rejected if not any(r.message is m for _, m in revived)]
    to_park += [(r.message, r.reason, r.error) for r in batch.rejected]
    if to_park:
        _park(to_park)  # a revived message refused again stays parked (seen again, with the new reason)
    resolved = [pk for pk, message in revived if id(message) not in rejected]
    if resolved:
        DeadLetter.objects.filter(pk__in=resolved, status=DeadLetterStatus.PARKED).update(
            status=DeadLetterStatus.REPLAYED, resolved_at=timezone.now(), resolved_by=ARRIVAL_ACTOR_LABEL
        )
    outcome.parked = len(to_park) - (len(batch.rejected) - len(own_rejections))
    outcome.applied = len(fresh) - len(own_rejections)
    outcome.revived = len(resolved)
    applied = collections.Counter(message.event_type for message in pending if id(message) not in rejected)
    for event_type, count in applied.items():
        inbound_total.labels(event_type=event_type, outcome="applied").inc(count)
    if outcome.duplicates:
        inbound_total.labels(event_type="*", outcome="duplicate").inc(outcome.duplicates)
    return outcome


def _lock_unknown_references(batch: effects.Batch, messages: list[Message]) -> None:
    """Lock the references this batch may park as waiting or create (see `effects.lock_references`).

    Resolves the customer references of the batch once (the families reuse the result); only
    identity events and references without a customer take a lock, so a batch of orders for known
    customers takes none.
    """
    references = {m.data["customer_id"] for m in messages if m.event_type not in IDENTITY_TYPES}
    if references:
        batch.known.update(effects.resolve_customers(references))
    to_lock = (references - set(batch.known)) | {m.data["user_id"] for m in messages if m.event_type in IDENTITY_TYPES}
    effects.lock_references(to_lock)


# The customer reference a waiting dead letter names; only evaluated for waiting letters, whose
# bodies are valid envelopes (other dead letters may hold anything).
_WAITING_FOR = """
SELECT id, body, routing_key FROM customers_deadletter
WHERE status = 'parked' AND reason = %(reason)s
  AND CASE WHEN reason = %(reason)s THEN
        CASE WHEN event_type = 'identity.user.deleted.v1' THEN body::jsonb -> 'data' ->> 'user_id'
             ELSE body::jsonb -> 'data' ->> 'customer_id' END
      END = ANY(%(references)s::text[])
ORDER BY received_at, id
FOR UPDATE
"""


def _revive_waiting(user_ids: set[str]) -> list[tuple[int, Message]]:
    """The parked messages that waited for these users' customers, back in the inbox to be applied.

    The caller holds the references' locks, so a message parked concurrently is either visible here
    or was parked after its sender saw the customer (it then was applied, not parked).
    """
    references = sorted(user_ids | {effects.reference_key(user_id) for user_id in user_ids})
    with connection.cursor() as cursor:
        cursor.execute(_WAITING_FOR, {"reason": WAITING_FOR_CUSTOMER, "references": references})
        letters = cursor.fetchall()
    messages = [(pk, parse(body, routing_key)) for pk, body, routing_key in letters]
    messages = [(pk, message) for pk, message in messages if not message.problem]
    if not messages:
        return []
    first: dict[UUID, int] = {}  # one message per event id (a letter may have been parked twice)
    for pk, message in messages:
        first.setdefault(message.event_id, pk)
    unique = [(pk, message) for pk, message in messages if first[message.event_id] == pk]
    fresh_ids = _insert_inbox([message for _, message in unique])
    revived = [(pk, message) for pk, message in unique if message.event_id in fresh_ids]
    done = {pk for pk, _ in revived}
    already = [pk for pk, _ in messages if pk not in done]
    if already:  # applied meanwhile (a staff replay), or the same event twice: nothing left to wait for
        DeadLetter.objects.filter(pk__in=already).update(
            status=DeadLetterStatus.REPLAYED, resolved_at=timezone.now(), resolved_by=ARRIVAL_ACTOR_LABEL
        )
    logger.info("inbound: %d waiting messages applied now their customer exists", len(revived))
    return revived


def _park(entries: list[tuple[Message, str, str]]) -> None:
    """Write dead letters (a redelivered one counts as seen again) and log them without personal data."""
    now = timezone.now()
    for message, reason, error in entries:
        event_id = str(message.event_id) if message.event_id else message.raw_event_id
        logger.warning(
            "inbound message parked: reason=%s type=%s event_id=%s error=%s",
            reason,
            message.event_type or "-",
            str(message.event_id) if message.event_id else "-",
            error,
        )
        inbound_total.labels(event_type=message.event_type or "-", outcome="parked").inc()
        if event_id:
            seen_again = DeadLetter.objects.filter(event_id=event_id, status=DeadLetterStatus.PARKED).update(
                times_seen=F("times_seen") + 1, last_seen_at=now, reason=reason, error=error
            )
            if seen_again:
                continue
        DeadLetter.objects.create(
            event_id=event_id[:100],
            event_type=message.event_type,
            routing_key=message.routing_key[:255],
            reason=reason,
            error=error,
            body=message.body,
            received_at=now,
            last_seen_at=now,
        )


def replay_dead_letter(dead_letter: DeadLetter, *, actor_label: str) -> str:
    """Apply a parked message again (e.g. its customer exists now). Returns the dead letter's new status."""
    message = parse(dead_letter.body, dead_letter.routing_key)
    outcome = apply_batch([message])
    if outcome.parked:
        return DeadLetterStatus.PARKED
    DeadLetter.objects.filter(pk=dead_letter.pk).update(
        status=DeadLetterStatus.REPLAYED, resolved_at=timezone.now(), resolved_by=actor_label
    )
    return DeadLetterStatus.REPLAYED


def discard_dead_letters(*, ids: list[int], actor_label: str) -> int:
    """Staff decided these parked messages are not to be applied."""
    return DeadLetter.objects.filter(pk__in=ids, status=DeadLetterStatus.PARKED).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now(), resolved_by=actor_label
    )


def prune_inbox(*, older_than: timedelta | None = None, batch_size: int = 10_000) -> int:
    """Forget inbox rows after INBOX_RETENTION (far longer than any broker keeps a message unacknowledged)."""
    cutoff = timezone.now() - (older_than if older_than is not None else settings.INBOX_RETENTION)
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM customers_inboxmessage WHERE event_id IN ("
                " SELECT event_id FROM customers_inboxmessage WHERE received_at < %s LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            return deleted


def prune_dead_letters(*, older_than: timedelta | None = None) -> int:
    """Delete resolved dead letters (replayed or discarded) resolved before DEAD_LETTER_RETENTION.

    Parked ones stay, however old: they are work nobody has done yet (or events waiting for their
    customer), and deleting them would lose the event silently. Their bodies may hold personal
    data; privacy scrubs a customer's dead letters at erasure, whatever their status.
    """
    cutoff = timezone.now() - (older_than if older_than is not None else settings.DEAD_LETTER_RETENTION)
    resolved = DeadLetter.objects.exclude(status=DeadLetterStatus.PARKED)
    deleted, _ = resolved.filter(
        Q(resolved_at__lt=cutoff) | Q(resolved_at__isnull=True, last_seen_at__lt=cutoff)
    ).delete()
    return deleted
