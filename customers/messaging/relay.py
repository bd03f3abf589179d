"""The outbox relay: publishes outbox rows to the `customer.events` topic exchange, at least once.

One batch is one database transaction:

1. claim up to N unpublished rows, oldest first, with `SELECT … FOR UPDATE SKIP LOCKED`, so two
   relays never publish the same rows at once (a relay killed mid-batch loses its locks with its
   connection, and the rows are claimed again: a duplicate, never a loss). Rows are never found by
   "id greater than the last one seen": rows commit out of order.
2. hold back every customer (subject) that has an older unpublished event which another relay is
   publishing right now or which is waiting for a retry: a customer's events leave in order.
3. publish (routing key = event type, message id = event id, persistent, JSON envelope built by
   PostgreSQL), then wait for the broker: publisher confirms on RabbitMQ, the pipeline's replies
   on Redis. On RabbitMQ the batch goes in waves (every customer's first event of the batch, then
   every customer's second, …), each wave confirmed before the next: a customer whose event was
   not accepted has none of its later events sent (they stay unpublished, behind the failed one,
   and go after it). Redis' pipeline is all or nothing.
4. mark what the broker accepted as published; count a failed attempt on the failed rows with
   exponential backoff; leave the rows not sent as they were; commit.

Per-customer order: a customer's events leave in (occurred_at, sequence) order, each after the
broker accepted the previous one. That order is the commit order too, because
`customers.events.record` locks the customer's row before it stamps and inserts an event: a second
transaction recording for the same customer waits until the first commits, so an event can never
become visible after a later event of its customer (whatever row the writers locked themselves,
e.g. an address). Across customers there is no order.

Published rows are deleted after `OUTBOX_RETENTION`. Prometheus counters count what was published,
what failed and what was held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.utils import timezone
from kombu import Producer
from prometheus_client import Counter

from customers.messaging import broker

logger = logging.getLogger(__name__)

published_total = Counter("outbox_events_published", "Outbox events the broker accepted", ["event_type"])
failures_total = Counter("outbox_publish_failures", "Failed attempts to publish an outbox event", ["reason"])
held_total = Counter("outbox_events_held", "Events held back behind an older unpublished event of their customer")
pruned_total = Counter("outbox_events_pruned", "Published outbox rows deleted after the retention period")

# Unpublished, due, and not behind an older event of the same subject that waits for a retry.
_CLAIM = """
SELECT o.event_id, o.event_type, o.subject, o.occurred_at, o.sequence,
       json_build_object(
           'event_id', o.event_id, 'event_type', o.event_type, 'occurred_at', o.occurred_at,
           'source', o.source, 'subject', o.subject, 'data', o.data, 'metadata', o.metadata
       )::text
FROM customers_outboxevent o
WHERE o.published_at IS NULL
  AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= clock_timestamp())
  AND NOT EXISTS (
      SELECT 1 FROM customers_outboxevent p
      WHERE p.subject = o.subject AND p.published_at IS NULL AND p.next_attempt_at IS NOT NULL
        AND p.next_attempt_at > clock_timestamp()
        AND (p.occurred_at, p.sequence) < (o.occurred_at, o.sequence)
  )
ORDER BY o.occurred_at, o.sequence
LIMIT %s
FOR UPDATE OF o SKIP LOCKED
"""

# Subjects with an older unpublished event outside this batch (locked by another relay, or just
# committed by a slow writer): their events wait for the next batch.
_BLOCKED = """
SELECT DISTINCT f.subject
FROM unnest(%s::varchar[], %s::timestamptz[], %s::bigint[]) AS f(subject, occurred_at, sequence)
WHERE EXISTS (
    SELECT 1 FROM customers_outboxevent p
    WHERE p.subject = f.subject AND p.published_at IS NULL
      AND (p.occurred_at, p.sequence) < (f.occurred_at, f.sequence)
)
"""

_MARK_PUBLISHED = """
UPDATE customers_outboxevent
SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = '', next_attempt_at = NULL
WHERE event_id = ANY(%s::uuid[])
"""

_MARK_FAILED = """
UPDATE customers_outboxevent
SET attempts = attempts + 1, last_error = %s,
    next_attempt_at = clock_timestamp() + make_interval(secs => least(%s, power(2, attempts)) * (0.75 + random() / 2))
WHERE event_id = ANY(%s::uuid[])
"""


@dataclass(frozen=True)
class Row:
    event_id: object
    event_type: str
    subject: str
    occurred_at: object
    sequence: int
    body: str


@dataclass
class BatchResult:
    claimed: int = 0
    published: int = 0
    failed: int = 0
    held: int = 0
    errors: list[str] = field(default_factory=list)


class PublishFailed(Exception):
    """The broker did not accept the message (nack, timeout, lost connection)."""


# The outcome of a row that was not sent because an earlier event of its customer failed.
NOT_SENT = "not sent: an earlier event of its customer was not accepted"
NACKED = "nacked by the broker"


class Publisher:
    """A kombu producer on one connection, reconnecting after a failure."""

    def __init__(self, *, url: str | None = None, exchange: str | None = None, confirm_timeout: float | None = None):
        self.url = url or settings.EVENTS_BROKER_URL
        self.exchange = broker.outbound_exchange(exchange)
        self.confirm_timeout = confirm_timeout or settings.EVENTS_RELAY_CONFIRM_TIMEOUT_SECONDS
        self.connection = None
        self.channel = None
        self.producer = None
        self._outcomes: list | None = None
        self._first_tag = 0
        self._next_tag = 1

    def _open(self) -> None:
        if self.producer is not None:
            return
        self.connection = broker.connection(self.url)
        self.connection.ensure_connection(max_retries=1)
        self.channel = self.connection.channel()
        self.exchange(self.channel).declare()
        self.producer = Producer(self.channel, exchange=self.exchange, auto_declare=False)
        if broker.is_amqp(self.connection):
            self.channel.confirm_select()
            self.channel.events["basic_ack"].add(self._on_ack)
            self.channel.events["basic_nack"].add(self._on_nack)
            self._next_tag = 1

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:
                logger.debug("relay: closing a broken broker connection failed", exc_info=True)
        self.connection = self.channel = self.producer = None

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, NACKED)

    def _settle(self, delivery_tag: int, multiple: bool, outcome: str | None) -> None:
        if self._outcomes is None:
            return
        last = delivery_tag - self._first_tag
        first = 0 if multiple else last
        for index in range(max(first, 0), min(last + 1, len(self._outcomes))):
            if self._outcomes[index] is False:
                self._outcomes[index] = outcome

    def publish(self, rows: Sequence[Row]) -> list[str | None]:
        """Publish in order; one outcome per row: None when the broker accepted it, else why not.

        `NOT_SENT` for a row held back because an earlier row of its subject failed.
        """
        if not rows:
            return []
        try:
            self._open()
            if broker.is_amqp(self.connection):
                return self._publish_in_waves(rows)
            return self._publish_pipelined(rows)
        except Exception as error:
            self.close()
            return [f"{type(error).__name__}: broker unavailable"] * len(rows)

    def _publish_in_waves(self, rows: Sequence[Row]) -> list[str | None]:
        """Wave n = each subject's n-th row; a subject with a failed row sends nothing after it."""
        waves: dict[int, list[int]] = defaultdict(list)
        position: dict[str, int] = defaultdict(int)
        for index, row in enumerate(rows):
            waves[position[row.subject]].append(index)
            position[row.subject] += 1
        outcomes: list[str | None] = [NOT_SENT] * len(rows)
        failed: set[str] = set()
        for wave in range(len(waves)):
            indexes = [index for index in waves[wave] if rows[index].subject not in failed]
            if not indexes:
                break  # every later wave holds only subjects that failed
            try:
                results = self._publish_confirmed([rows[index] for index in indexes])
            except Exception as error:
                # Timeout or lost connection: what the broker made of this wave is unknown, and the
                # channel's delivery tags can no longer be trusted. Nothing more goes on it.
                self.close()
                for index in indexes:
                    outcomes[index] = f"{type(error).__name__}: {error}"[:200] or "broker unavailable"
                break
            for index, outcome in zip(indexes, results, strict=True):
                outcomes[index] = outcome
                if outcome:
                    failed.add(rows[index].subject)
        return outcomes

    def _send(self, row: Row) -> None:
        self.producer.publish(
            row.body,
            routing_key=row.event_type,
            message_id=str(row.event_id),
            delivery_mode=broker.PERSISTENT,
            content_type="application/json",
            content_encoding="utf-8",
            retry=False,
        )

    def _publish_confirmed(self, rows: Sequence[Row]) -> list[str | None]:
        # `False` = waiting for the broker's confirm; acks and nacks settle it (see _settle).
        self._outcomes = [False] * len(rows)
        self._first_tag = self._next_tag
        try:
            for row in rows:
                self._send(row)
                self._next_tag += 1
            deadline = time.monotonic() + self.confirm_timeout
            while False in self._outcomes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PublishFailed("no publisher confirm in time")
                try:
                    self.connection.drain_events(timeout=min(remaining, 1.0))
                except TimeoutError:
                    continue
            return list(self._outcomes)
        finally:
            self._outcomes = None

    def _publish_pipelined(self, rows: Sequence[Row]) -> list[str | None]:
        # One Redis pipeline for the batch; it either runs (the broker has the messages) or raises.
        with broker.bindings_cached(self.channel), self.producer.batch(max_size=2 * len(rows) + 10):
            for row in rows:
                self._send(row)
        return [None] * len(rows)


def _claim(cursor, batch_size: int) -> list[Row]:
    cursor.execute(_CLAIM, [batch_size])
    return [Row(*values) for values in cursor.fetchall()]


def _blocked_subjects(cursor, rows: list[Row]) -> set[str]:
    first: dict[str, Row] = {}
    for row in rows:
        first.setdefault(row.subject, row)
    heads = list(first.values())
    cursor.execute(
        _BLOCKED,
        [[r.subject for r in heads], [r.occurred_at for r in heads], [r.sequence for r in heads]],
    )
    return {subject for (subject,) in cursor.fetchall()}


def relay_batch(publisher: Publisher, *, batch_size: int | None = None) -> BatchResult:
    """Claim, publish and mark one batch (see the module docstring)."""
    batch_size = batch_size or settings.EVENTS_RELAY_BATCH_SIZE
    result = BatchResult()
    with transaction.atomic(), connection.cursor() as cursor:
        rows = _claim(cursor, batch_size)
        result.claimed = len(rows)
        if not rows:
            return result
        blocked = _blocked_subjects(cursor, rows)
        ready = [row for row in rows if row.subject not in blocked]
        result.held = len(rows) - len(ready)
        outcomes = publisher.publish(ready)

        # What the broker accepted is published (sending it again would duplicate it and break the
        # order); a failed row waits for its retry; a row not sent (behind a failed one of its
        # customer) is left as it was and goes after the failed one.
        published = [row for row, outcome in zip(ready, outcomes, strict=True) if outcome is None]
        failed = [
            (row, outcome) for row, outcome in zip(ready, outcomes, strict=True) if outcome and outcome != NOT_SENT
        ]
        not_sent = sum(1 for outcome in outcomes if outcome == NOT_SENT)
        result.held += not_sent
        if published:
            cursor.execute(_MARK_PUBLISHED, [[row.event_id for row in published]])
        for reason in sorted({outcome for _, outcome in failed}):
            ids = [row.event_id for row, outcome in failed if outcome == reason]
            cursor.execute(_MARK_FAILED, [reason[:500], settings.EVENTS_RELAY_MAX_BACKOFF_SECONDS, ids])
            failures_total.labels(reason=reason.split(":")[0][:40]).inc(len(ids))
            result.errors.append(reason)
        result.published = len(published)
        result.failed = len(failed)
    for row in published:
        published_total.labels(event_type=row.event_type).inc()
    if result.held:
        held_total.inc(result.held)
    return result


def prune_published(*, older_than: timedelta | None = None, batch_size: int = 5000) -> int:
    """Delete rows published more than `OUTBOX_RETENTION` ago, in batches."""
    cutoff = timezone.now() - (older_than if older_than is not None else settings.OUTBOX_RETENTION)
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM customers_outboxevent WHERE event_id IN ("
                " SELECT event_id FROM customers_outboxevent WHERE published_at < %s LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            break
    pruned_total.inc(deleted)
    return deleted


def drain(
    *,
    publisher: Publisher | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    stop: threading.Event | None = None,
    poll_seconds: float | None = None,
    forever: bool = False,
) -> BatchResult:
    """Relay batches until the outbox is empty (or `max_seconds` pass, or `stop` is set).

    With `forever`, keep polling instead of returning when the outbox is empty: the relay process.
    Database and broker outages are waited out with backoff; they never end the loop.
    """
    own_publisher = publisher is None
    publisher = publisher or Publisher()
    stop = stop or threading.Event()
    batch_size = batch_size or settings.EVENTS_RELAY_BATCH_SIZE
    poll = settings.EVENTS_RELAY_POLL_SECONDS if poll_seconds is None else poll_seconds
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    total = BatchResult()
    backoff = 0.0
    last_prune = time.monotonic()
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                result = relay_batch(publisher, batch_size=batch_size)
            except (OperationalError, InterfaceError) as error:
                logger.warning("relay: database unavailable (%s); retrying", type(error).__name__)
                close_old_connections()
                connection.close()
                backoff = min(max(backoff * 2, 0.5), 30.0)
                stop.wait(backoff)
                continue
            for name in ("claimed", "published", "failed", "held"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            total.errors += result.errors
            if result.failed and not result.published:
                backoff = min(max(backoff * 2, 0.5), 30.0)
                logger.warning("relay: %d events not accepted (%s); retrying", result.failed, result.errors[-1])
                stop.wait(backoff)
                continue
            backoff = 0.0
            if forever and time.monotonic() - last_prune > settings.EVENTS_RELAY_PRUNE_INTERVAL_SECONDS:
                prune_published()
                last_prune = time.monotonic()
            if result.claimed < batch_size and not result.held:
                if not forever:
                    break
                stop.wait(poll)  # drained: poll again soon
            elif result.held and not result.published:
                if not forever:
                    break  # what is left waits behind another relay
                stop.wait(0.05)
    finally:
        if own_publisher:
            publisher.close()
    return total
