"""The consumer's own receive path on Redis (customers.messaging.redis_queue), against the real Redis.

What kombu's publishers write is what it reads; a batch is always in the queue or in a processing
list of a consumer; a consumer's batches come back when it is gone (its heartbeat expired) or when it
stops; an acknowledged batch is gone. Kills with SIGKILL are in test_faults.py.
"""

import json
import time
import uuid

import pytest
import redis
from kombu import Connection, Producer

from customers.messaging import broker, inbound
from customers.messaging.consumer import InboundConsumer
from customers.messaging.redis_queue import SEP, RedisQueue
from customers.models import Customer, DeadLetter, InboxMessage
from tests.events.conftest import envelope, publish_inbound, require
from tests.factories import CustomerFactory


@pytest.fixture
def redis_url():
    return require("redis")


@pytest.fixture
def queue_names(redis_url):
    suffix = uuid.uuid4().hex[:10]
    names = (f"test.platform.events.{suffix}", f"test.inbound.{suffix}")
    yield names
    client = redis.Redis.from_url(redis_url)
    keys = [*client.scan_iter(f"*{suffix}*", count=1000)]
    if keys:
        client.delete(*keys)


def declare(url, exchange, queue, keys=("order.created.v1",)):
    with Connection(url) as conn:
        broker.inbound_queue(routing_keys=keys, name=queue, exchange=exchange)(conn.channel()).declare()


def publish(url, exchange, bodies, **options):
    with Connection(url) as conn:
        producer = Producer(conn.channel(), exchange=broker.inbound_exchange(exchange))
        for body in bodies:
            key = body["event_type"]
            producer.publish(json.dumps(body), routing_key=key, content_type="application/json", **options)


def order_body(number, customer_id="c-1"):
    data = {
        "order_id": f"o-{number}",
        "customer_id": str(customer_id),
        "total": "10.00",
        "currency": "EUR",
        "status": "open",
        "placed_at": "2026-03-01T12:00:00+00:00",
    }
    return envelope("order.created.v1", data)


def queue(url, name, *, timeout=2.0):
    return RedisQueue(url, name, visibility_timeout=timeout)


def bodies_of(deliveries):
    return [json.loads(delivery.decode()[0]) for delivery in deliveries]


def test_reads_what_kombu_publishers_write_in_order_with_the_routing_key(redis_url, queue_names):
    exchange, name = queue_names
    declare(redis_url, exchange, name)
    plain = [order_body(i) for i in range(5)]
    publish(redis_url, exchange, plain)
    publish(redis_url, exchange, [order_body(5)], compression="zlib")
    publish(redis_url, exchange, [order_body(6)], priority=5)  # kombu files it under another list
    receiver = queue(redis_url, name)
    receiver.start()
    try:
        deliveries = receiver.receive(100, timeout=0)
        assert [body["data"]["order_id"] for body in bodies_of(deliveries)] == [f"o-{i}" for i in range(7)]
        assert {delivery.decode()[1] for delivery in deliveries} == {"order.created.v1"}
        parsed = [inbound.parse(*delivery.decode()) for delivery in deliveries]
        assert [message.problem for message in parsed] == [None] * 7
    finally:
        receiver.close()


def test_a_batch_is_in_the_queue_or_in_a_processing_list_until_acknowledged(redis_url, queue_names):
    exchange, name = queue_names
    declare(redis_url, exchange, name)
    publish(redis_url, exchange, [order_body(i) for i in range(10)])
    client = redis.Redis.from_url(redis_url)
    receiver = queue(redis_url, name)
    receiver.start()
    try:
        assert len(receiver.receive(4, timeout=0)) == 4
        first = receiver.seal()
        assert len(receiver.receive(4, timeout=0)) == 4
        second = receiver.seal()
        assert client.llen(name) == 2
        assert client.llen(first.key) == 4 and client.llen(second.key) == 4
        receiver.ack(first)
        assert not client.exists(first.key)
        assert client.smembers(receiver.lists_key) == {second.key.encode()}
    finally:
        receiver.close()  # a clean stop puts the unacknowledged batch back, first in line
    assert client.llen(name) == 6
    again = queue(redis_url, name)
    again.start()
    try:
        orders = [body["data"]["order_id"] for body in bodies_of(again.receive(10, timeout=0))]
    finally:
        again.close()
    assert orders == ["o-4", "o-5", "o-6", "o-7", "o-8", "o-9"]


def test_the_batches_of_a_gone_consumer_come_back_once_its_heartbeat_expired(redis_url, queue_names):
    exchange, name = queue_names
    declare(redis_url, exchange, name)
    publish(redis_url, exchange, [order_body(i) for i in range(6)])
    gone = queue(redis_url, name, timeout=1.0)
    gone.start()
    assert len(gone.receive(3, timeout=0)) == 3
    gone.seal()
    assert len(gone.receive(2, timeout=0)) == 2
    gone._stop_heartbeat.set()  # killed: no heartbeat any more, nothing put back

    survivor = queue(redis_url, name, timeout=1.0)
    try:
        survivor.start()
        assert survivor.recover() == 0  # still beating for a while: its batches stay its own
        time.sleep(1.3)
        assert survivor.recover() == 5
        orders = [body["data"]["order_id"] for body in bodies_of(survivor.receive(10, timeout=0))]
        assert sorted(orders) == [f"o-{i}" for i in range(6)]
        assert orders[-1] == "o-5"  # the one nobody took stays behind the recovered ones
        client = redis.Redis.from_url(redis_url)
        assert not client.exists(gone.lists_key)
        assert gone.consumer_id.encode() not in client.smembers(survivor.consumers_key)
    finally:
        survivor.close()


def test_waits_for_a_message_without_taking_it_outside_a_batch(redis_url, queue_names):
    exchange, name = queue_names
    declare(redis_url, exchange, name)
    receiver = queue(redis_url, name)
    receiver.start()
    try:
        started = time.monotonic()
        assert receiver.receive(10, timeout=0.3) == []
        assert time.monotonic() - started >= 0.25
        publish(redis_url, exchange, [order_body(1)])
        assert len(receiver.receive(10, timeout=1)) == 1
    finally:
        receiver.close()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_consumer_applies_each_event_once_when_a_consumer_died_holding_batches(redis_url, queue_names, settings):
    """One consumer took batches and died before acknowledging (one of them committed); the next applies
    the rest, and the committed one again as duplicates."""
    exchange, name = queue_names
    settings.EVENTS_REDIS_VISIBILITY_TIMEOUT = 1
    customer = CustomerFactory(email="buyer@example.com")
    worker = InboundConsumer(url=redis_url, exchange=exchange, queue=name, batch_size=50, batch_wait_ms=20)
    worker.declare()
    bodies = [order_body(i, customer.pk) for i in range(30)]
    publish_inbound(redis_url, exchange, bodies)

    dead = queue(redis_url, name, timeout=1)
    dead.start()
    committed = dead.receive(10, timeout=0)
    inbound.apply_batch([inbound.parse(*delivery.decode()) for delivery in committed])  # committed, never acked
    dead.seal()
    dead.receive(10, timeout=0)  # received, never applied
    dead._stop_heartbeat.set()

    deadline = time.monotonic() + 15
    while InboxMessage.objects.count() < 30 and time.monotonic() < deadline:
        stats = worker.run(idle_seconds=1.5, max_seconds=5)
    assert InboxMessage.objects.count() == 30
    assert Customer.objects.get(pk=customer.pk).order_count == 30
    assert stats.duplicates + stats.applied <= 30  # this consumer saw each message at most once


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_message_that_is_not_kombus_json_is_parked(redis_url, queue_names, settings):
    exchange, name = queue_names
    worker = InboundConsumer(url=redis_url, exchange=exchange, queue=name, batch_size=10, batch_wait_ms=20)
    worker.declare()
    redis.Redis.from_url(redis_url).lpush(name, b"\x00 not a kombu message")
    stats = worker.run(idle_seconds=1.0, max_seconds=10)
    assert (stats.received, stats.parked) == (1, 1)
    assert DeadLetter.objects.get().reason == "INVALID_JSON"
    client = redis.Redis.from_url(redis_url)
    assert client.llen(name) == 0 and not [*client.scan_iter(f"*{name}{SEP}processing*")]
