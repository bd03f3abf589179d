"""The inbound consumer against the real brokers (each test runs on Redis and on RabbitMQ)."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import OperationalError
from kombu import Connection, Queue

from customers.messaging import inbound
from customers.messaging.consumer import InboundConsumer
from customers.models import Customer, DeadLetter, InboxMessage
from tests.events.conftest import envelope, publish_inbound
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def order(kind, customer, order_id, total="10.00", at=T0):
    data = {
        "order_id": order_id,
        "customer_id": str(customer.pk),
        "total": total,
        "currency": "EUR",
        "status": "open",
        "placed_at": T0.isoformat(),
    }
    return envelope(f"order.{kind}.v1", data, occurred_at=at)


def consumer(names, **options) -> InboundConsumer:
    return InboundConsumer(exchange=names.inbound_exchange, queue=names.queue, batch_wait_ms=50, **options)


def queue_depth(url, name) -> int:
    with Connection(url) as conn:
        try:
            return Queue(name, channel=conn.channel()).queue_declare(passive=True).message_count
        except conn.channel_errors:  # Redis: an empty queue is no key at all
            return 0


def test_applies_events_in_batches_and_acknowledges_them(events_settings, broker_url, names):
    customers = [CustomerFactory(email=f"c{i}@example.com") for i in range(3)]
    worker = consumer(names, batch_size=4)
    worker.declare()
    bodies = [order("created", customer, f"o-{c}-{i}") for c, customer in enumerate(customers) for i in range(3)]
    publish_inbound(broker_url, names.inbound_exchange, bodies)

    stats = worker.run(idle_seconds=1.0, max_seconds=20)

    assert (stats.received, stats.applied, stats.duplicates, stats.parked) == (9, 9, 0, 0)
    assert stats.batches >= 3  # at most 4 per batch
    assert [Customer.objects.get(pk=c.pk).order_count for c in customers] == [3, 3, 3]
    assert InboxMessage.objects.count() == 9
    assert queue_depth(broker_url, names.queue) == 0


def test_redelivered_and_reordered_events_are_applied_once(events_settings, broker_url, names):
    customer = CustomerFactory(email="a@example.com")
    created = order("created", customer, "o-1", at=T0)
    completed = order("completed", customer, "o-1", at=T0 + timedelta(minutes=1))
    refunded = order("refunded", customer, "o-1", at=T0 + timedelta(minutes=2))
    worker = consumer(names)
    worker.declare()
    publish_inbound(broker_url, names.inbound_exchange, [refunded, created, created, completed, refunded])

    stats = worker.run(idle_seconds=1.0, max_seconds=20)

    assert (stats.applied, stats.duplicates) == (3, 2)
    customer.refresh_from_db()
    assert (customer.order_count, customer.total_spent) == (0, 0)


def test_poison_messages_are_parked_and_the_consumer_goes_on(events_settings, broker_url, names):
    customer = CustomerFactory(email="a@example.com")
    worker = consumer(names, routing_keys=[*inbound.HANDLED_TYPES, "order.shipped.v1", "garbage"])
    worker.declare()
    publish_inbound(
        broker_url,
        names.inbound_exchange,
        [
            "this is not json",
            envelope("order.shipped.v1", {"order_id": "o-1"}),
            envelope("order.created.v1", {"order_id": "o-1", "customer_id": str(customer.pk)}),
            order("created", customer, "o-2"),
        ],
        routing_keys=["garbage", "order.shipped.v1", "order.created.v1", "order.created.v1"],
    )

    stats = worker.run(idle_seconds=1.0, max_seconds=20)

    assert (stats.received, stats.applied, stats.parked) == (4, 1, 3)
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == [
        "INVALID_JSON",
        "INVALID_PAYLOAD",
        "UNKNOWN_EVENT_TYPE",
    ]
    assert Customer.objects.get(pk=customer.pk).order_count == 1
    assert queue_depth(broker_url, names.queue) == 0


def test_a_batch_is_retried_until_the_database_takes_it(events_settings, broker_url, names):
    customer = CustomerFactory(email="a@example.com")
    calls = []

    def flaky(messages):
        calls.append(len(messages))
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return inbound.apply_batch(messages)

    worker = consumer(names, apply=flaky)
    worker.declare()
    publish_inbound(broker_url, names.inbound_exchange, [order("created", customer, "o-1")])
    stats = worker.run(idle_seconds=1.0, max_seconds=20)
    assert calls == [1, 1] and stats.applied == 1
    assert Customer.objects.get(pk=customer.pk).order_count == 1


def test_consume_events_command(events_settings, broker_url, names):
    customer = CustomerFactory(email="a@example.com")
    InboundConsumer(exchange=names.inbound_exchange, queue=names.queue).declare()
    body = {
        "customer_id": str(customer.pk),
        "points": 25,
        "reason": "welcome",
        "occurred_at": T0.isoformat(),
    }
    publish_inbound(broker_url, names.inbound_exchange, [envelope("loyalty.points.earned.v1", body)])
    out = io.StringIO()
    call_command(
        "consume_events", "--idle-seconds", "1", "--max-seconds", "20", "--workers", "3", "--prefetch", "50", stdout=out
    )
    assert Customer.objects.get(pk=customer.pk).loyalty_points == 25
    assert "3 apply worker(s), prefetch 50" in out.getvalue() and "applied 1" in out.getvalue()
