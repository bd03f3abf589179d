"""A customer's events leave in order and once: after a refused event, and when writers commit out of order."""

import contextlib
import json
import threading
import uuid
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from customers import events
from customers.messaging import relay
from customers.models import OutboxEvent
from tests.events.conftest import require
from tests.factories import CustomerFactory

# The broker refuses this type in these tests: a queue bound to it is full (reject-publish).
REFUSED = "customer.preferences.updated.v1"


def bodies(tap, expect=None):
    return [json.loads(message.body) for message in tap.messages(expect=expect, timeout=3)]


def record(customer, event_type, **data):
    with transaction.atomic():
        return events.record(event_type=event_type, subject=customer.pk, data={"customer_id": str(customer.pk), **data})


@pytest.fixture
def amqp_names():
    suffix = uuid.uuid4().hex[:10]
    found = SimpleNamespace(
        exchange=f"test.customer.events.{suffix}", queue=f"test.q.{suffix}", tap=f"test.tap.{suffix}"
    )
    yield found
    with contextlib.suppress(Exception), Connection(require("rabbitmq"), connect_timeout=2) as conn:
        channel = conn.channel()
        with contextlib.suppress(Exception):
            Queue(found.tap, channel=channel).delete()
        with contextlib.suppress(Exception):
            Exchange(found.exchange, type="topic", channel=channel).delete()


@pytest.fixture
def amqp(settings, amqp_names):
    """RabbitMQ only (nacks exist there), with a queue that makes the broker nack every REFUSED event."""
    names = amqp_names
    url = require("rabbitmq")
    settings.EVENTS_BROKER_URL = url
    settings.EVENTS_EXCHANGE = names.exchange
    full = Queue(
        f"{names.queue}.full",
        exchange=Exchange(names.exchange, type="topic", durable=True),
        routing_key=REFUSED,
        durable=False,
        queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    with Connection(url) as conn:
        full(conn.channel()).declare()
    yield url, full
    with Connection(url) as conn:
        full(conn.channel()).delete()


@pytest.fixture
def amqp_tap(amqp, amqp_names):
    names = amqp_names
    from tests.events.conftest import Tap

    return Tap(amqp[0], names.exchange, names.tap)


@pytest.mark.django_db
def test_after_a_nack_a_customers_later_events_wait_and_go_after_it_once(amqp, amqp_tap):
    url, full = amqp
    customer = CustomerFactory(email="a@example.com")
    refused = record(customer, REFUSED, changed_fields=["language"])
    later = record(customer, "customer.updated.v1", changed_fields=["first_name"], version=2)
    other = CustomerFactory(email="b@example.com")
    before = relay.failures_total.labels(reason=relay.NACKED)._value.get()

    publisher = relay.Publisher()
    try:
        result = relay.relay_batch(publisher)
    finally:
        publisher.close()

    assert (result.published, result.failed) == (2, 1)  # both created events; the refused one
    assert result.held == 1  # the customer's later event was not sent
    first = [b["event_id"] for b in bodies(amqp_tap, expect=3)]
    assert str(later.event_id) not in first
    row = OutboxEvent.objects.get(pk=refused.pk)
    assert (row.published_at, row.attempts, row.last_error) == (None, 1, relay.NACKED)
    untouched = OutboxEvent.objects.get(pk=later.pk)
    assert (untouched.published_at, untouched.attempts, untouched.next_attempt_at) == (None, 0, None)
    assert OutboxEvent.objects.get(event_type="customer.created.v1", subject=str(other.pk)).published_at
    assert relay.failures_total.labels(reason=relay.NACKED)._value.get() == before + 1

    # While the refused one backs off, the later one stays behind it.
    assert relay.drain().published == 0
    assert OutboxEvent.objects.get(pk=later.pk).published_at is None

    # The broker takes it now: it goes first, the later one after it, each once in all.
    with Connection(url) as conn:
        full(conn.channel()).delete()
    OutboxEvent.objects.filter(pk=refused.pk).update(next_attempt_at=None)
    assert relay.drain().published == 2
    again = [b["event_id"] for b in bodies(amqp_tap, expect=2) if b["subject"] == str(customer.pk)]
    assert again == [str(refused.event_id), str(later.event_id)]
    assert (first + again).count(str(later.event_id)) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_later_event_committed_first_never_leaves_before_the_earlier_one(events_settings, tap):
    """Two writers for one customer (say two address changes: each locks only its address).

    The first records its event and keeps its transaction open; the second records a later event
    and tries to commit; a relay runs in between. Recording locks the customer's row, so the second
    writer waits for the first and the relay cannot see the later event before the earlier one.
    """
    customer = CustomerFactory(email=f"{uuid.uuid4().hex[:8]}@example.com")
    relay.drain()
    tap.messages()
    second_done = threading.Event()
    ids: dict[str, str] = {}

    def second_writer():
        try:
            ids["second"] = str(record(customer, "customer.updated.v1", changed_fields=["b"], version=3).event_id)
        finally:
            second_done.set()
            connection.close()

    def relay_once():
        try:
            relay.drain()
        finally:
            connection.close()

    with transaction.atomic():
        ids["first"] = str(record(customer, "customer.updated.v1", changed_fields=["a"], version=2).event_id)
        writer = threading.Thread(target=second_writer)
        writer.start()
        second_done.wait(1.0)
        meanwhile = threading.Thread(target=relay_once)
        meanwhile.start()
        meanwhile.join(10)
    writer.join(10)
    assert second_done.is_set() and "second" in ids
    relay.drain()
    order = [b["event_id"] for b in bodies(tap, expect=2)]
    assert order == [ids["first"], ids["second"]]
    first, second = (OutboxEvent.objects.get(pk=ids[key]) for key in ("first", "second"))
    assert (first.occurred_at, first.sequence) < (second.occurred_at, second.sequence)


@pytest.mark.django_db
def test_no_confirm_in_time_counts_a_failed_attempt_and_the_retry_delivers(amqp, amqp_tap):
    """PublishFailed on a real broker: a confirm timeout no broker can meet."""
    customer = CustomerFactory(email="a@example.com")
    (row,) = OutboxEvent.objects.filter(subject=str(customer.pk))
    publisher = relay.Publisher(confirm_timeout=1e-9)
    try:
        result = relay.relay_batch(publisher)
    finally:
        publisher.close()
    assert (result.published, result.failed) == (0, 1)
    row.refresh_from_db()
    assert row.published_at is None and row.attempts == 1
    assert row.last_error.startswith("PublishFailed") and row.next_attempt_at > timezone.now()

    OutboxEvent.objects.filter(pk=row.pk).update(next_attempt_at=None)
    assert relay.drain().published == 1
    row.refresh_from_db()
    assert row.published_at and row.attempts == 2
    copies = [m.properties["message_id"] for m in amqp_tap.messages(expect=2, timeout=3)]
    assert set(copies) == {str(row.event_id)}  # at least once: the timed-out copy may have arrived too


@pytest.mark.django_db
def test_a_nack_settles_only_its_own_message(amqp):
    """Publisher._on_nack from the broker: one outcome per row, in order."""
    publisher = relay.Publisher()
    rows = [
        relay.Row(uuid.uuid4(), "customer.updated.v1", "s-1", timezone.now(), 1, "{}"),
        relay.Row(uuid.uuid4(), REFUSED, "s-2", timezone.now(), 2, "{}"),
        relay.Row(uuid.uuid4(), "customer.updated.v1", "s-3", timezone.now(), 3, "{}"),
        relay.Row(uuid.uuid4(), "customer.updated.v1", "s-2", timezone.now(), 4, "{}"),
    ]
    try:
        assert publisher.publish(rows) == [None, relay.NACKED, None, relay.NOT_SENT]
        assert publisher.publish(rows[:1]) == [None]  # the channel goes on after a nack
    finally:
        publisher.close()
