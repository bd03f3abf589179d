"""Faults: relays killed with SIGKILL mid-batch, again and again, while events are being written.

The writer records `order.created.v1` events into our outbox (in production another service
publishes those; here it lets the consumer at the end apply what the relays delivered). A quarter
of its transactions roll back. Two `manage.py relay_events` processes publish concurrently and are
killed at random moments and restarted. In the end every committed event reached the broker at
least once, no rolled-back one did, and the inbox-deduplicating consumer applied each committed
event exactly once, whatever the duplicates. Bounded to a minute per broker.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection, transaction

from customers import events
from customers.messaging.consumer import InboundConsumer
from customers.models import Customer, CustomerActivity, CustomerOrder, DeadLetter, InboxMessage, OutboxEvent
from tests.events.conftest import Tap
from tests.factories import CustomerFactory

ROOT = Path(__file__).resolve().parents[2]
BACKLOG = 300
WRITES = 200
MIN_KILLS = 10
RELAY_PHASE = 35  # seconds
CONSUMER_PHASE = 20


class Rollback(Exception):
    pass


def start_relay(env: dict, name: str) -> subprocess.Popen:
    database = f"{env['DATABASE_URL']}?application_name={name}"
    return subprocess.Popen(
        [sys.executable, "manage.py", "relay_events", "--batch-size", "20", "--poll", "0.05"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": database},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def in_batch(name: str) -> bool:
    """The relay has claimed its rows and is publishing them (its last statement: the held-back check)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state = 'idle in transaction'"
            " AND query LIKE %s",
            [name, "%unnest%"],
        )
        return cursor.fetchone() is not None


def order_data(customer, number: int) -> dict:
    return {
        "order_id": f"fault-{number}",
        "customer_id": str(customer.pk),
        "total": "10.00",
        "currency": "EUR",
        "status": "open",
        "placed_at": datetime.now(UTC).isoformat(),
    }


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_relays_killed_mid_batch_lose_nothing_and_each_event_is_applied_once(broker_url, names, settings):
    started = time.monotonic()
    settings.EVENTS_BROKER_URL = broker_url
    customers = [CustomerFactory(email=f"f{i}@example.com") for i in range(8)]
    tap = Tap(broker_url, names.exchange, names.tap, routing_key="order.created.v1")
    consumer = InboundConsumer(
        url=broker_url,
        exchange=names.exchange,
        queue=names.queue,
        routing_keys=["order.created.v1"],
        batch_size=100,
        batch_wait_ms=50,
    )
    consumer.declare()

    committed: list[tuple[str, object]] = []
    rolled_back: list[str] = []
    rng = random.Random(7)

    def write(numbers, per_transaction: int, pause: float):
        try:
            for start in range(0, len(numbers), per_transaction):
                chunk = numbers[start : start + per_transaction]
                written = []
                try:
                    with transaction.atomic():
                        for number in chunk:
                            customer = rng.choice(customers)
                            data = order_data(customer, number)
                            event = events.record(event_type="order.created.v1", subject=customer.pk, data=data)
                            written.append((str(event.event_id), customer.pk))
                        if chunk[0] % 4 == 3:
                            raise Rollback
                    committed.extend(written)
                except Rollback:
                    rolled_back.extend(event_id for event_id, _ in written)
                time.sleep(pause)
        finally:
            connection.close()

    write(list(range(BACKLOG)), per_transaction=50, pause=0)  # a backlog waiting when the relays start
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "EVENTS_BROKER_URL": broker_url,
        "EVENTS_EXCHANGE": names.exchange,
    }
    forker = subprocess.Popen(
        [sys.executable, "-m", "tests.events.relay_forker"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def spawn() -> tuple[str, int]:
        name = f"fault-relay-{uuid.uuid4().hex[:8]}"
        forker.stdin.write(f"spawn {name}\n")
        forker.stdin.flush()
        return name, int(forker.stdout.readline())

    # One relay started as `manage.py relay_events` would be in production, one forked; replacements are forked.
    first = f"fault-relay-{uuid.uuid4().hex[:8]}"
    command = start_relay(env, first)
    relays = [(first, command.pid), spawn()]
    kills = 0
    writer = threading.Thread(target=write, args=(list(range(BACKLOG, BACKLOG + WRITES)), 1, 0.002))
    writer.start()
    try:
        # SIGKILL a relay whenever it is caught inside a batch, again and again, while events are written.
        extra = iter(range(100_000, 200_000))
        while time.monotonic() - started < RELAY_PHASE * 0.6:
            if not writer.is_alive():
                if kills >= MIN_KILLS:
                    break
                if not OutboxEvent.objects.filter(event_type="order.created.v1", published_at__isnull=True).exists():
                    write([next(extra) for _ in range(60)], per_transaction=60, pause=0)  # a backlog to catch them in
            for index, (name, pid) in enumerate(relays):
                if in_batch(name):
                    time.sleep(rng.uniform(0, 0.004))  # before, during or after the broker took the batch
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                    relays[index] = spawn()
            time.sleep(0.002)
        writer.join(timeout=RELAY_PHASE)
        assert not writer.is_alive(), "the writer did not finish in time"
        # Let the survivors finish the backlog.
        while OutboxEvent.objects.filter(event_type="order.created.v1", published_at__isnull=True).exists():
            assert time.monotonic() - started < RELAY_PHASE, "the relays did not publish everything in time"
            time.sleep(0.1)
    finally:
        if command.poll() is None:
            command.send_signal(signal.SIGTERM)
        forker.stdin.write("quit\n")
        forker.stdin.flush()
        for process in (command, forker):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        command.wait()

    delivered = Counter(message.properties["message_id"] for message in tap.messages(expect=len(committed)))
    committed_ids = {event_id for event_id, _ in committed}
    assert kills >= MIN_KILLS
    assert committed_ids <= set(delivered), f"lost: {len(committed_ids - set(delivered))}"
    assert not set(rolled_back) & set(delivered)
    duplicates = sum(delivered.values()) - len(delivered)
    print(f"{kills} relays killed; {len(committed)} events committed, {duplicates} delivered twice or more")

    stats = consumer.run(idle_seconds=1.5, max_seconds=CONSUMER_PHASE)
    assert stats.applied == len(committed)
    assert stats.duplicates == sum(delivered.values()) - len(committed)
    assert set(InboxMessage.objects.values_list("event_id", flat=True)) == {uuid.UUID(i) for i in committed_ids}
    assert CustomerOrder.objects.count() == len(committed)
    per_customer = Counter(customer_id for _, customer_id in committed)
    assert {c.pk: c.order_count for c in Customer.objects.filter(pk__in=[c.pk for c in customers])} == {
        c.pk: per_customer.get(c.pk, 0) for c in customers
    }
    assert time.monotonic() - started < RELAY_PHASE + CONSUMER_PHASE + 5


def consumer_in_batch(name: str) -> bool:
    """The consumer is inside a batch's transaction (inbox written, effects under way, not committed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL"
            " AND state IN ('active', 'idle in transaction')",
            [name],
        )
        return cursor.fetchone() is not None


def _broker_leftovers(url: str, queue: str) -> str:
    from kombu import Connection

    with Connection(url) as conn:
        channel = conn.channel()
        client = getattr(channel, "client", None)
        if client is None:
            return f"left on the broker: {channel.queue_declare(queue=queue, passive=True).message_count} waiting"
        processing = sum(client.llen(key) for key in client.scan_iter(f"_inbound*{queue}*processing*", _type="list"))
        return f"left on Redis: {client.llen(queue)} waiting, {processing} in consumers' processing lists"


CONSUMER_EVENTS = 1200
CONSUMER_KILLS = 6
CONSUMER_KILL_PHASE = 30  # seconds


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_consumers_killed_mid_batch_apply_each_event_exactly_once(broker_url, names, settings):
    """SIGKILL `consume_events` inside its batch transaction, again and again: nothing counts twice.

    Loyalty points add up, so one event applied twice changes the total; orders count once per
    order. A tenth of the messages are also published twice, as a producer retrying would. On both
    brokers every event is applied exactly once and none is lost (on Redis the consumer moves a
    batch into its processing list atomically; the survivors put a killed one's lists back).
    """
    from tests.events.conftest import envelope, publish_inbound

    started = time.monotonic()
    settings.EVENTS_BROKER_URL = broker_url
    settings.EVENTS_REDIS_VISIBILITY_TIMEOUT = 2
    customers = [CustomerFactory(email=f"k{i}@example.com") for i in range(6)]
    keys = ["order.created.v1", "loyalty.points.earned.v1"]
    final = InboundConsumer(
        url=broker_url, exchange=names.inbound_exchange, queue=names.queue, routing_keys=keys, batch_size=100
    )
    final.declare()

    rng = random.Random(11)
    bodies = []
    for number in range(CONSUMER_EVENTS):
        customer = rng.choice(customers)
        if number % 2:
            points = rng.randint(1, 50)
            data = {
                "customer_id": str(customer.pk),
                "points": points,
                "reason": "x",
                "occurred_at": "2026-01-01T00:00:00+00:00",
            }
            bodies.append(envelope("loyalty.points.earned.v1", data, source="loyalty"))
        else:
            bodies.append(envelope("order.created.v1", {**order_data(customer, number), "order_id": f"kill-{number}"}))
    again = rng.sample(bodies, CONSUMER_EVENTS // 10)
    publish_inbound(broker_url, names.inbound_exchange, bodies + again)

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "EVENTS_BROKER_URL": broker_url,
        "EVENTS_INBOUND_EXCHANGE": names.inbound_exchange,
        "EVENTS_INBOUND_QUEUE": names.queue,
        "EVENTS_REDIS_VISIBILITY_TIMEOUT": "2",
    }
    forker = subprocess.Popen(
        [sys.executable, "-m", "tests.events.relay_forker"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def spawn() -> tuple[str, int]:
        name = f"fault-consumer-{uuid.uuid4().hex[:8]}"
        forker.stdin.write(f"consumer {name}\n")
        forker.stdin.flush()
        return name, int(forker.stdout.readline())

    kills = 0
    consumers = [spawn(), spawn()]
    try:
        while kills < CONSUMER_KILLS and time.monotonic() - started < CONSUMER_KILL_PHASE:
            for index, (name, pid) in enumerate(consumers):
                if consumer_in_batch(name):
                    time.sleep(rng.uniform(0, 0.01))  # before or after the commit, before the ack
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                    consumers[index] = spawn()
            time.sleep(0.002)
    finally:
        forker.stdin.write("quit\n")
        forker.stdin.flush()
        try:
            forker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            forker.kill()
    assert kills >= CONSUMER_KILLS, f"only {kills} consumers caught inside a batch"

    # What the killed ones left unacknowledged comes back (Redis: once their heartbeat expired, after
    # EVENTS_REDIS_VISIBILITY_TIMEOUT, the running consumer puts their processing lists back).
    deadline = time.monotonic() + CONSUMER_PHASE
    while InboxMessage.objects.count() < CONSUMER_EVENTS and time.monotonic() < deadline:
        final.run(idle_seconds=3, max_seconds=max(deadline - time.monotonic(), 0.1))
    applied = {str(event_id) for event_id in InboxMessage.objects.values_list("event_id", flat=True)}
    lost = CONSUMER_EVENTS - len(applied)
    assert lost == 0, _broker_leftovers(broker_url, names.queue)
    assert not DeadLetter.objects.exists()

    # Whatever was applied was applied once: the metrics are exactly those of the applied events.
    points, orders = Counter(), Counter()
    for body in bodies:
        if body["event_id"] in applied:
            customer_id = uuid.UUID(body["data"]["customer_id"])
            if body["event_type"] == "order.created.v1":
                orders[customer_id] += 1
            else:
                points[customer_id] += body["data"]["points"]
    found = {c.pk: (c.loyalty_points, c.order_count) for c in Customer.objects.filter(pk__in=[c.pk for c in customers])}
    assert found == {c.pk: (points[c.pk], orders[c.pk]) for c in customers}
    inbound_entries = CustomerActivity.objects.filter(event_id__in=[body["event_id"] for body in bodies])
    assert inbound_entries.count() == len(applied)
    print(f"{kills} consumers killed mid-batch; {len(applied)} events applied once each, {lost} lost")
    assert time.monotonic() - started < CONSUMER_KILL_PHASE + CONSUMER_PHASE + 15
