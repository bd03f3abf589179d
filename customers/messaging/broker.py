"""kombu connections, exchanges and queues for events, all from settings.

Redis (the default, `redis://…`) and RabbitMQ (`amqp://…`) work by the broker URL alone. With
Redis, kombu emulates exchanges, bindings and acknowledgements; unacknowledged messages come back
after `EVENTS_REDIS_VISIBILITY_TIMEOUT` seconds if a consumer dies without closing its connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from django.conf import settings
from kombu import Connection, Exchange, Queue, binding
from kombu.transport import virtual

PERSISTENT = 2


def connection(url: str | None = None) -> Connection:
    url = url or settings.EVENTS_BROKER_URL
    options = {}
    if url.startswith(("redis://", "rediss://")):
        options["visibility_timeout"] = settings.EVENTS_REDIS_VISIBILITY_TIMEOUT
    return Connection(url, transport_options=options, connect_timeout=5, heartbeat=0)


def is_amqp(conn: Connection) -> bool:
    return conn.transport.driver_type == "amqp"


def is_redis(conn: Connection) -> bool:
    return conn.transport.driver_type == "redis"


def outbound_exchange(name: str | None = None) -> Exchange:
    """Our events: topic exchange `customer.events`, routing key = event type."""
    return Exchange(name or settings.EVENTS_EXCHANGE, type="topic", durable=True, delivery_mode=PERSISTENT)


def inbound_exchange(name: str | None = None) -> Exchange:
    """Other services' events: topic exchange `platform.events`, routing key = event type."""
    return Exchange(name or settings.EVENTS_INBOUND_EXCHANGE, type="topic", durable=True, delivery_mode=PERSISTENT)


def inbound_queue(*, routing_keys: Iterable[str], name: str | None = None, exchange: str | None = None) -> Queue:
    """Our durable queue on the inbound exchange, bound once per event type we consume."""
    source = inbound_exchange(exchange)
    return Queue(
        name or settings.EVENTS_INBOUND_QUEUE,
        bindings=[binding(source, routing_key=key) for key in sorted(set(routing_keys))],
        durable=True,
        auto_delete=False,
    )


@contextlib.contextmanager
def bindings_cached(channel) -> Iterator[None]:
    """Within the block, kombu's Redis emulation reads an exchange's bindings once, not per message.

    kombu looks the binding table up in Redis on every publish; a relay batch goes to one exchange,
    so one lookup per batch is enough (a new binding is seen from the next batch on).
    """
    original = getattr(channel, "get_table", None)
    if original is None:
        yield
        return
    tables: dict[str, list] = {}

    def get_table(exchange):
        if exchange not in tables:
            tables[exchange] = original(exchange)
        return tables[exchange]

    channel.get_table = get_table
    try:
        yield
    finally:
        del channel.get_table  # back to the class's method


def ack_all(conn: Connection, channel, messages: list) -> None:
    """Acknowledge a batch: one frame on RabbitMQ (`multiple`), one round trip on Redis."""
    if not messages:
        return
    if is_amqp(conn):
        messages[-1].ack(multiple=True)  # every earlier delivery on this channel is in the batch
        for message in messages[:-1]:
            message._state = "ACK"
        return
    qos = getattr(channel, "qos", None)
    if is_redis(conn) and hasattr(qos, "_remove_from_indices"):
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            for message in messages:
                qos._remove_from_indices(message.delivery_tag, pipe)
            pipe.execute()
        for message in messages:
            virtual.QoS.ack(qos, message.delivery_tag)  # the in-process bookkeeping only
            message._state = "ACK"
        return
    for message in messages:
        message.ack()
