"""The inbound consumer: drains `platform.events` through our durable queue, in batches.

Messages are collected until `batch_size` arrived or `batch_wait_ms` passed since the first one,
then applied in one transaction (`inbound.apply_batch`) and acknowledged after the commit. A crash
before the acknowledgement means redelivery, which the inbox turns into a no-op. Malformed and
unknown messages are parked by `apply_batch`, so nothing a producer sends can stop the loop; a
database or broker outage is waited out with backoff while the batch stays unacknowledged.

Known limit on Redis: kombu's Redis transport pops a message (BRPOP) and records it as
unacknowledged in a second round trip, so a consumer killed (SIGKILL, OOM) between the two loses
that one message; RabbitMQ has no such window. tests/events/test_faults.py measures it. Closing it
needs an atomic receive (BLMOVE into a per-consumer processing list, recovered when its consumer
is gone) instead of kombu's emulation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import amqp.exceptions
import redis.exceptions
from django.conf import settings
from django.db import OperationalError, close_old_connections, connection, connections
from kombu import Consumer
from kombu.exceptions import OperationalError as KombuOperationalError

from customers.messaging import broker, inbound

logger = logging.getLogger(__name__)

# What kombu's transports raise when the broker goes away.
CONNECTION_ERRORS = (
    OSError,
    KombuOperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    redis.exceptions.ConnectionError,
)


@dataclass
class Stats:
    received: int = 0
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    parked: int = 0


class InboundConsumer:
    def __init__(
        self,
        *,
        url: str | None = None,
        exchange: str | None = None,
        queue: str | None = None,
        routing_keys: Iterable[str] | None = None,
        batch_size: int | None = None,
        batch_wait_ms: int | None = None,
        apply: Callable = inbound.apply_batch,
    ) -> None:
        self.url = url or settings.EVENTS_BROKER_URL
        self.queue = broker.inbound_queue(
            routing_keys=routing_keys if routing_keys is not None else inbound.HANDLED_TYPES,
            name=queue,
            exchange=exchange,
        )
        self.batch_size = batch_size or settings.EVENTS_INBOUND_BATCH_SIZE
        self.batch_wait = (batch_wait_ms if batch_wait_ms is not None else settings.EVENTS_INBOUND_BATCH_WAIT_MS) / 1000
        self.apply = apply
        self.stats = Stats()
        self._pending: list = []
        self._first_at = 0.0
        self._in_flight = None
        self._threaded = True
        self._executor = None
        self._last_activity = 0.0

    def declare(self) -> None:
        """Create the exchange, the queue and its bindings (idempotent)."""
        with broker.connection(self.url) as conn:
            self.queue(conn.default_channel).declare()

    def _on_message(self, message) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(message)

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        idle_seconds: float | None = None,
        max_seconds: float | None = None,
    ) -> Stats:
        """Consume until `stop` is set (or nothing arrived for `idle_seconds`, or `max_seconds` passed).

        While one batch is applied (in a worker thread, waiting on PostgreSQL), the next one is
        received; a batch is acknowledged once its transaction committed. Called inside a
        transaction (tests), batches are applied in this thread, in that transaction.
        """
        stop = stop or threading.Event()
        self._threaded = not connection.in_atomic_block
        started = time.monotonic()
        self._last_activity = started
        backoff = 0.0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbound-apply") as executor:
            self._executor = executor
            while not stop.is_set():
                try:
                    with broker.connection(self.url) as conn:
                        channel = conn.channel()
                        self.queue(channel).declare()
                        consumer = Consumer(
                            channel, queues=[self.queue], on_message=self._on_message, auto_declare=False
                        )
                        consumer.qos(prefetch_count=3 * self.batch_size)
                        consumer.consume()
                        backoff = 0.0
                        self._consume(conn, channel, stop, started, idle_seconds, max_seconds)
                        consumer.cancel()
                except CONNECTION_ERRORS as error:
                    # Unacknowledged messages go back to the queue; the broker redelivers them.
                    self._pending = []
                    self._abandon_in_flight()
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    logger.warning(
                        "consumer: broker unavailable (%s); reconnecting in %.1fs", type(error).__name__, backoff
                    )
                    stop.wait(backoff)
            if self._threaded:
                executor.submit(connections.close_all).result()
        return self.stats

    def _consume(self, conn, channel, stop, started, idle_seconds, max_seconds) -> None:
        while not stop.is_set():
            now = time.monotonic()
            if max_seconds is not None and now - started > max_seconds:
                stop.set()
                break
            idle = not self._pending and self._in_flight is None
            if idle_seconds is not None and idle and now - self._last_activity > idle_seconds:
                stop.set()
                break
            self._drain(conn)
            self._collect(conn, channel, wait=False)
            if self._pending:
                self._last_activity = time.monotonic()
            # A full batch goes at once; a partial one when it waited long enough and the worker is free
            # (while the worker is busy, the batch keeps growing: batches adapt to the database's pace).
            if self._pending and (
                len(self._pending) >= self.batch_size
                or (time.monotonic() - self._first_at >= self.batch_wait and self._in_flight is None)
            ):
                self._dispatch(conn, channel, stop)
        if self._pending:
            self._dispatch(conn, channel, stop)
        self._collect(conn, channel, wait=True)

    def _dispatch(self, conn, channel, stop: threading.Event) -> None:
        """Hand the pending batch to the worker (after the one before it committed and was acknowledged)."""
        self._collect(conn, channel, wait=True)
        batch, self._pending = self._pending, []
        if self._threaded:
            self._in_flight = (self._executor.submit(self._apply_batch, batch, stop), batch)
        else:
            self._in_flight = (_Done(self._apply_batch(batch, stop)), batch)
            self._collect(conn, channel, wait=True)

    def _collect(self, conn, channel, *, wait: bool) -> None:
        """Acknowledge the batch in flight once its transaction committed."""
        if self._in_flight is None:
            return
        future, batch = self._in_flight
        if not wait and not future.done():
            return
        outcome = future.result()
        self._in_flight = None
        self._last_activity = time.monotonic()
        if outcome is None:
            return  # given up while stopping: left unacknowledged, the broker redelivers it
        broker.ack_all(conn, channel, batch)
        self.stats.received += len(batch)
        self.stats.batches += 1
        self.stats.applied += outcome.applied
        self.stats.duplicates += outcome.duplicates
        self.stats.parked += outcome.parked

    def _abandon_in_flight(self) -> None:
        if self._in_flight is not None:
            future, _ = self._in_flight
            future.result()  # committed or not, its messages were not acknowledged: they come again
            self._in_flight = None

    def _drain(self, conn) -> None:
        """Receive what is ready: wait briefly for a first message, then fill the batch until it is due."""
        while len(self._pending) < self.batch_size:
            if self._pending:
                timeout = self._first_at + self.batch_wait - time.monotonic()
                if timeout <= 0:
                    if self._in_flight is None or self._in_flight[0].done():
                        return
                    timeout = 0.01  # the worker is busy: keep filling the batch meanwhile
            else:
                timeout = 0.25  # come back regularly to check `stop` and idleness
            try:
                conn.drain_events(timeout=timeout)
            except TimeoutError:
                return

    def _apply_batch(self, batch: list, stop: threading.Event):
        """Parse and apply one batch; None when stopping before it could be applied."""
        messages = [inbound.parse(m.body, m.delivery_info.get("routing_key", "")) for m in batch]
        backoff = 0.0
        while True:
            try:
                return self.apply(messages)
            except OperationalError as error:
                # Lost connection, deadlock, serialization failure: nothing was committed. Try again,
                # unless we are stopping: then the batch stays unacknowledged and the broker redelivers it.
                if stop.is_set():
                    return None
                backoff = min(max(backoff * 2, 0.1), 10.0)
                logger.warning("consumer: batch not applied (%s); retrying in %.1fs", type(error).__name__, backoff)
                if not connection.in_atomic_block:
                    close_old_connections()
                    connection.close()
                stop.wait(backoff)


class _Done:
    """A finished result with the interface of a future (batches applied in the consumer's thread)."""

    def __init__(self, value) -> None:
        self.value = value

    def done(self) -> bool:
        return True

    def result(self):
        return self.value
