"""The outbox relay against the real brokers (each test runs on Redis and on RabbitMQ)."""

import json
from datetime import datetime, timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from customers import events, services, tasks
from customers.messaging import relay
from customers.models import OutboxEvent
from tests.factories import CustomerFactory


def published(messages) -> list[dict]:
    return [json.loads(message.body) for message in messages]


def counter(metric, **labels) -> float:
    return (metric.labels(**labels) if labels else metric)._value.get()


@pytest.mark.django_db
class TestPublishing:
    def test_every_row_goes_out_with_its_routing_key_id_and_envelope(self, events_settings, tap):
        customer = CustomerFactory(email="a@example.com")
        services.customer_update(actor=customer_actor(), customer_id=customer.pk, changes={"first_name": "Zed"})
        rows = list(OutboxEvent.objects.order_by("occurred_at"))
        before = counter(relay.published_total, event_type="customer.created.v1")

        result = relay.drain()

        assert (result.published, result.failed) == (2, 0)
        messages = tap.messages(expect=2)
        assert [m.delivery_info["routing_key"] for m in messages] == ["customer.created.v1", "customer.updated.v1"]
        for message, row in zip(messages, rows, strict=True):
            assert message.properties["message_id"] == str(row.event_id)
            assert message.properties.get("delivery_mode") == 2
            assert message.content_type == "application/json"
            body = json.loads(message.body)
            expected = events.envelope(row)
            assert datetime.fromisoformat(body.pop("occurred_at")) == row.occurred_at
            expected.pop("occurred_at")
            assert body == expected
        assert all(r.published_at and r.attempts == 1 for r in OutboxEvent.objects.all())
        assert counter(relay.published_total, event_type="customer.created.v1") == before + 1
        assert relay.drain().claimed == 0  # nothing is published twice

    def test_a_customers_events_leave_in_order_across_batches(self, events_settings, tap):
        customer = CustomerFactory(email="a@example.com")
        for name in ["B", "C", "D", "E"]:
            services.customer_update(actor=customer_actor(), customer_id=customer.pk, changes={"first_name": name})
        relay.drain(batch_size=2)
        bodies = published(tap.messages(expect=5))
        assert [b["event_type"] for b in bodies] == ["customer.created.v1"] + ["customer.updated.v1"] * 4
        assert [b["data"].get("version") for b in bodies[1:]] == [2, 3, 4, 5]

    def test_events_behind_a_failing_one_wait_for_it(self, events_settings, tap):
        customer = CustomerFactory(email="a@example.com")
        services.customer_update(actor=customer_actor(), customer_id=customer.pk, changes={"first_name": "B"})
        other = CustomerFactory(email="b@example.com")
        created = OutboxEvent.objects.get(event_type="customer.created.v1", subject=str(customer.pk))
        OutboxEvent.objects.filter(pk=created.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))

        relay.drain()
        assert [b["subject"] for b in published(tap.messages(expect=1))] == [str(other.pk)]
        assert OutboxEvent.objects.filter(subject=str(customer.pk), published_at__isnull=True).count() == 2

        OutboxEvent.objects.filter(pk=created.pk).update(next_attempt_at=None)
        relay.drain()
        assert [b["event_type"] for b in published(tap.messages(expect=2))] == [
            "customer.created.v1",
            "customer.updated.v1",
        ]


def customer_actor():
    from customers.actor import Actor

    return Actor.system("tests")


@pytest.mark.django_db
def test_an_unreachable_broker_counts_a_failed_attempt_and_backs_off(settings):
    settings.EVENTS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    CustomerFactory(email="a@example.com")
    before = counter(relay.failures_total, reason="OperationalError")
    result = relay.relay_batch(relay.Publisher())
    assert (result.published, result.failed) == (0, 1)
    row = OutboxEvent.objects.get()
    assert row.published_at is None and row.attempts == 1
    assert "broker unavailable" in row.last_error
    assert timezone.now() < row.next_attempt_at < timezone.now() + timedelta(seconds=2)
    assert counter(relay.failures_total, reason="OperationalError") == before + 1
    assert relay.relay_batch(relay.Publisher()).claimed == 0  # backing off


@pytest.mark.django_db
def test_published_rows_are_pruned_after_the_retention_period(settings):
    settings.OUTBOX_RETENTION = timedelta(days=2)  # not the default (7): the pruning reads the setting
    CustomerFactory(email="a@example.com")
    CustomerFactory(email="b@example.com")
    CustomerFactory(email="c@example.com")
    old, recent, unpublished = OutboxEvent.objects.order_by("occurred_at")
    OutboxEvent.objects.filter(pk=old.pk).update(published_at=timezone.now() - timedelta(days=3))
    OutboxEvent.objects.filter(pk=recent.pk).update(published_at=timezone.now() - timedelta(days=1))
    assert tasks.prune_events.delay().get()["outbox"] == 1
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {recent.pk, unpublished.pk}


@pytest.mark.django_db
def test_the_beat_task_and_the_command_relay_too(events_settings, tap):
    CustomerFactory(email="a@example.com")
    tasks.relay_outbox.delay()
    CustomerFactory(email="b@example.com")
    call_command("relay_events", "--once", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert len(tap.messages(expect=2)) == 2
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_relays_never_publish_the_same_rows_and_keep_a_customers_order(events_settings, tap):
    """A second relay skips the rows the first holds, and the customers whose earlier event it holds."""
    first = CustomerFactory(email="a@example.com")
    services.customer_update(actor=customer_actor(), customer_id=first.pk, changes={"first_name": "B"})
    second = CustomerFactory(email="b@example.com")
    first_created = OutboxEvent.objects.get(event_type="customer.created.v1", subject=str(first.pk))

    # Another relay is busy with the first customer's oldest event (its row lock, in another session).
    other = psycopg.connect(dbname=connection.settings_dict["NAME"], host="127.0.0.1", user="postgres")
    try:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM customers_outboxevent WHERE event_id = %s FOR UPDATE", [first_created.pk])
        publisher = relay.Publisher()
        result = relay.relay_batch(publisher)
        publisher.close()
        first_rows = list(OutboxEvent.objects.filter(subject=str(first.pk)).order_by("occurred_at", "sequence"))
        assert result.held == len(first_rows) - 1  # the locked one is skipped, the later ones wait
        subjects = {b["subject"] for b in published(tap.messages(expect=result.published))}
        assert str(second.pk) in subjects and str(first.pk) not in subjects
    finally:
        other.rollback()
        other.close()
    relay.drain()
    later = [b for b in published(tap.messages(expect=len(first_rows))) if b["subject"] == str(first.pk)]
    assert [b["event_id"] for b in later] == [str(row.event_id) for row in first_rows]
    types = [b["event_type"] for b in later]
    assert types.index("customer.created.v1") < types.index("customer.updated.v1")


@pytest.mark.django_db
def test_a_batch_the_broker_took_but_nobody_marked_goes_out_again(events_settings, tap, monkeypatch):
    """The relay dies after the broker accepted the batch, before its commit: a duplicate, never a loss."""
    CustomerFactory(email="a@example.com")

    class Died(Exception):
        pass

    original = relay.Publisher.publish

    def publish_then_die(self, rows):
        original(self, rows)
        raise Died

    monkeypatch.setattr(relay.Publisher, "publish", publish_then_die)
    with pytest.raises(Died):
        relay.drain()
    assert OutboxEvent.objects.get().published_at is None
    monkeypatch.setattr(relay.Publisher, "publish", original)
    relay.drain()
    copies = tap.messages(expect=2)
    assert [m.properties["message_id"] for m in copies] == [str(OutboxEvent.objects.get().event_id)] * 2
    assert OutboxEvent.objects.get().attempts == 1
