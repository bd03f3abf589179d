"""The inbound consumer: drains `platform.events` through our durable queue, in batches.

Messages are collected until `batch_size` arrived or `batch_wait_ms` passed since the first one,
then applied in one transaction (`inbound.apply_batch`) and acknowledged after the commit. A crash
before the acknowledgement means redelivery, which the inbox turns into a no-op. Malformed and
unknown messages are parked by `apply_batch`, so nothing a producer sends can stop the loop; a
database or broker outage is waited out with backoff while the batch stays unacknowledged.

On RabbitMQ kombu's consumer receives with a prefetch of a few batches (`basic_qos`), and a batch is
acknowledged with one `multiple` ack. On Redis the consumer does not use kombu's emulation (one
message per round trip, and a message lost when the consumer is killed between kombu's BRPOP and
its own bookkeeping) but `redis_queue`: a batch moved atomically into a processing list of this
consumer per round trip, deleted after the commit, and moved back to the queue when its consumer
is gone. On both, a message is applied once whatever the kills and redeliveries (the inbox).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import amqp.exceptions
import redis.exceptions
from django.conf import settings
from django.db import OperationalError, close_old_connections, connection, connections
from kombu import Consumer
from kombu.exceptions import OperationalError as KombuOperationalError

from customers.messaging import broker, inbound, redis_queue

logger = logging.getLogger(__name__)

# What kombu's transports raise when the broker goes away.
CONNECTION_ERRORS = (
    OSError,
    KombuOperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@dataclass
class Stats:
    received: int = 0
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    parked: int = 0


# Batches applied at once, each in its own transaction on its own connection: PostgreSQL works on
# one while Python prepares the other (their customers are locked in one order, so they never
# deadlock; a batch that waits for another's customers goes on once that one committed).
APPLY_WORKERS = 2


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
        prefetch: int | None = None,
        workers: int = APPLY_WORKERS,
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
        self.workers = max(workers, 1)
        # Batches handed to the workers and not yet acknowledged: one per worker and one queued behind them.
        self.max_in_flight = self.workers + 1
        # RabbitMQ: unacknowledged messages the broker sends ahead (those batches, the one filling, one more).
        self.prefetch = min(prefetch or (self.max_in_flight + 2) * self.batch_size, 65535)
        self.apply = apply
        self.stats = Stats()
        self._pending: list = []
        self._first_at = 0.0
        self._in_flight: collections.deque = collections.deque()
        self._threaded = True
        self._executor = None
        self._last_activity = 0.0
        self._redis: redis_queue.RedisQueue | None = None

    def declare(self) -> None:
        """Create the exchange, the queue and its bindings (idempotent)."""
        with broker.connection(self.url) as conn:
            self.queue(conn.default_channel).declare()

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
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="inbound-apply") as executor:
            self._executor = executor
            try:
                while not stop.is_set():
                    try:
                        with self._session() as receiver:
                            backoff = 0.0
                            self._consume(receiver, stop, started, idle_seconds, max_seconds)
                    except CONNECTION_ERRORS as error:
                        # Unacknowledged messages go back to the queue; the broker redelivers them.
                        self._pending = []
                        self._abandon_in_flight()
                        backoff = min(max(backoff * 2, 0.5), 30.0)
                        logger.warning(
                            "consumer: broker unavailable (%s); reconnecting in %.1fs", type(error).__name__, backoff
                        )
                        stop.wait(backoff)
            finally:
                if self._redis is not None:
                    self._redis.close()  # what it did not acknowledge goes back to the queue now
                    self._redis = None
                if self._threaded:  # each worker closes its own connections (one task per worker)
                    barrier = threading.Barrier(self.workers, timeout=30)
                    closing = [executor.submit(_close_connections, barrier) for _ in range(self.workers)]
                    for future in closing:
                        future.result()
        return self.stats

    @contextlib.contextmanager
    def _session(self) -> Iterator[_KombuReceiver | _RedisReceiver]:
        """A connection to the broker with the queue declared, as a receiver of batches."""
        with broker.connection(self.url) as conn:
            channel = conn.channel()
            self.queue(channel).declare()
            if _atomic_redis(self.url):
                if self._redis is None:
                    self._redis = redis_queue.RedisQueue(
                        self.url,
                        self.queue.name,
                        visibility_timeout=settings.EVENTS_REDIS_VISIBILITY_TIMEOUT,
                        key_prefix=getattr(channel, "global_keyprefix", "") or "",
                    )
                self._redis.start()
                yield _RedisReceiver(self._redis, self._pending)
                return
            consumer = Consumer(channel, queues=[self.queue], on_message=self._on_message, auto_declare=False)
            consumer.qos(prefetch_count=self.prefetch)
            consumer.consume()
            yield _KombuReceiver(conn, channel)
            consumer.cancel()

    def _on_message(self, message) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(message)

    def _consume(self, receiver, stop, started, idle_seconds, max_seconds) -> None:
        while not stop.is_set():
            now = time.monotonic()
            if max_seconds is not None and now - started > max_seconds:
                stop.set()
                break
            idle = not self._pending and not self._in_flight
            if idle_seconds is not None and idle and now - self._last_activity > idle_seconds:
                stop.set()
                break
            receiver.tick()
            self._drain(receiver)
            self._collect(receiver, wait=False)
            if self._pending:
                self._last_activity = time.monotonic()
            # A full batch goes at once (queued behind those being applied when every worker is busy, so
            # no worker waits for it); a partial one when it waited long enough and a worker is free (while
            # they are busy, the batch keeps growing: batches adapt to the database's pace).
            if self._pending and (
                len(self._pending) >= self.batch_size
                or (time.monotonic() - self._first_at >= self.batch_wait and not self._worker_busy())
            ):
                self._dispatch(receiver, stop)
        if self._pending:
            self._dispatch(receiver, stop)
        self._collect(receiver, wait=True)

    def _dispatch(self, receiver, stop: threading.Event) -> None:
        """Hand the pending batch to a worker (or queue it behind those being applied)."""
        while len(self._in_flight) >= self.max_in_flight:
            self._collect(receiver, wait=True, oldest_only=True)
        batch, self._pending = self._pending, []
        receiver.pending = self._pending
        token = receiver.seal(batch)
        # Parsed here, while the worker still waits on PostgreSQL for the batch before.
        messages = [receiver.parse(message) for message in batch]
        if self._threaded:
            self._in_flight.append((self._executor.submit(self._apply_batch, messages, stop), batch, token))
        else:
            self._in_flight.append((_Done(self._apply_batch(messages, stop)), batch, token))
            self._collect(receiver, wait=True)

    def _collect(self, receiver, *, wait: bool, oldest_only: bool = False) -> None:
        """Acknowledge the batches applied so far, in order, each once its transaction committed."""
        while self._in_flight:
            future, batch, token = self._in_flight[0]
            if not wait and not future.done():
                return
            outcome = future.result()
            self._in_flight.popleft()
            self._last_activity = time.monotonic()
            if outcome is not None:  # else given up while stopping: left unacknowledged, the broker redelivers it
                receiver.ack(token)
                self.stats.received += len(batch)
                self.stats.batches += 1
                self.stats.applied += outcome.applied
                self.stats.duplicates += outcome.duplicates
                self.stats.parked += outcome.parked
            if oldest_only:
                return

    def _abandon_in_flight(self) -> None:
        while self._in_flight:
            future, _, _ = self._in_flight.popleft()
            future.result()  # committed or not, its messages were not acknowledged: they come again

    def _worker_busy(self) -> bool:
        """Every worker has a batch: a batch that is due may still grow."""
        return sum(not future.done() for future, _, _ in self._in_flight) >= self.workers

    def _drain(self, receiver) -> None:
        """Receive what is ready: wait briefly for a first message, then fill the batch until it is due."""
        while len(self._pending) < self.batch_size:
            if self._pending:
                timeout = self._first_at + self.batch_wait - time.monotonic()
                if timeout <= 0:
                    if not self._worker_busy():
                        return
                    timeout = 0.01  # the worker is busy: keep filling the batch meanwhile
            else:
                # Come back regularly to check `stop` and idleness, soon when a batch is to be acknowledged.
                timeout = 0.01 if self._in_flight else 0.25
            first = not self._pending
            if not receiver.receive(self.batch_size - len(self._pending), timeout):
                return
            if first and self._pending:
                self._first_at = time.monotonic()

    def _apply_batch(self, messages: list[inbound.Message], stop: threading.Event):
        """Apply one batch; None when stopping before it could be applied."""
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


def _close_connections(barrier: threading.Barrier) -> None:
    barrier.wait()  # every worker thread holds one of these tasks: each closes its own connections
    connections.close_all()


def _atomic_redis(url: str) -> bool:
    """Redis itself (not Sentinel or another kombu transport): our atomic batch receive applies."""
    return url.startswith(("redis://", "rediss://"))


class _KombuReceiver:
    """kombu's consumer (RabbitMQ): messages arrive through `_on_message`; a batch is acked after commit."""

    def __init__(self, conn, channel) -> None:
        self.conn, self.channel = conn, channel
        self.pending: list = []  # unused: kombu appends through the consumer's callback

    def tick(self) -> None:
        pass

    def receive(self, max_count: int, timeout: float) -> bool:
        try:
            self.conn.drain_events(timeout=timeout)
        except TimeoutError:
            return False
        return True

    def seal(self, batch: list) -> list:
        return batch

    def ack(self, batch: list) -> None:
        broker.ack_all(self.conn, self.channel, batch)

    @staticmethod
    def parse(message) -> inbound.Message:
        return inbound.parse(message.body, message.delivery_info.get("routing_key", ""))


class _RedisReceiver:
    """`redis_queue`: a batch per round trip into this consumer's processing list, deleted after commit."""

    def __init__(self, queue: redis_queue.RedisQueue, pending: list) -> None:
        self.queue = queue
        self.pending = pending

    def tick(self) -> None:
        self.queue.maybe_recover()

    def receive(self, max_count: int, timeout: float) -> bool:
        deliveries = self.queue.receive(max_count, timeout)
        self.pending += deliveries
        return bool(deliveries)

    def seal(self, batch: list) -> redis_queue.Batch:
        return self.queue.seal()

    def ack(self, batch: redis_queue.Batch) -> None:
        self.queue.ack(batch)

    @staticmethod
    def parse(delivery: redis_queue.Delivery) -> inbound.Message:
        return inbound.parse(*delivery.decode())


class _Done:
    """A finished result with the interface of a future (batches applied in the consumer's thread)."""

    def __init__(self, value) -> None:
        self.value = value

    def done(self) -> bool:
        return True

    def result(self):
        return self.value
