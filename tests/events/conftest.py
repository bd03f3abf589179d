"""Brokers for the event tests: the real Redis and RabbitMQ, with names unique to each test."""

import contextlib
import json
import os
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from kombu import Connection, Exchange, Producer, Queue

from customers.messaging import broker

BROKERS = {
    "redis": os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/14"),
    "rabbitmq": os.environ.get("TEST_EVENTS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
_reachable: dict[str, bool] = {}


def reachable(url: str) -> bool:
    if url not in _reachable:
        try:
            with Connection(url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
            _reachable[url] = True
        except Exception:
            _reachable[url] = False
    return _reachable[url]


def require(name: str) -> str:
    url = BROKERS[name]
    if not reachable(url):
        if os.environ.get("EVENTS_TESTS_REQUIRE_ALL_BROKERS"):
            pytest.fail(f"{name} is not reachable at {url}")
        pytest.skip(f"{name} is not reachable at {url}")
    return url


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request) -> str:
    """Each test using it runs once against Redis and once against RabbitMQ."""
    return require(request.param)


@pytest.fixture
def names(broker_url):
    """Exchange and queue names of this test only; deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    found = SimpleNamespace(
        exchange=f"test.customer.events.{suffix}",
        inbound_exchange=f"test.platform.events.{suffix}",
        queue=f"test.inbound.{suffix}",
        tap=f"test.tap.{suffix}",
    )
    yield found
    with contextlib.suppress(Exception), Connection(broker_url, connect_timeout=2) as conn:
        channel = conn.channel()
        for queue in (found.queue, found.tap):
            with contextlib.suppress(Exception):
                Queue(queue, channel=channel).delete()
        for exchange in (found.exchange, found.inbound_exchange):
            with contextlib.suppress(Exception):
                Exchange(exchange, type="topic", channel=channel).delete()


@pytest.fixture
def events_settings(settings, broker_url, names):
    settings.EVENTS_BROKER_URL = broker_url
    settings.EVENTS_EXCHANGE = names.exchange
    settings.EVENTS_INBOUND_EXCHANGE = names.inbound_exchange
    settings.EVENTS_INBOUND_QUEUE = names.queue
    settings.EVENTS_REDIS_VISIBILITY_TIMEOUT = 2
    return settings


class Tap:
    """A queue bound to an exchange (`#`): what was published there, in order."""

    def __init__(self, url: str, exchange: str, queue: str, routing_key: str = "#") -> None:
        self.url = url
        self.queue = Queue(
            queue, exchange=Exchange(exchange, type="topic", durable=True), routing_key=routing_key, durable=True
        )
        with Connection(url) as conn:
            self.queue(conn.channel()).declare()

    def messages(self, *, expect: int | None = None, timeout: float = 5.0) -> list:
        """Every message waiting (acknowledged as read); with `expect`, wait until that many arrived."""
        import time

        found = []
        deadline = time.monotonic() + timeout
        with Connection(self.url) as conn:
            queue = self.queue(conn.channel())
            while True:
                message = queue.get(no_ack=True)
                if message is not None:
                    found.append(message)
                    continue
                if expect is None or len(found) >= expect or time.monotonic() > deadline:
                    return found
                time.sleep(0.02)


@pytest.fixture
def tap(broker_url, names):
    return Tap(broker_url, names.exchange, names.tap)


def envelope(event_type: str, data: dict, *, event_id=None, occurred_at=None, source: str = "orders") -> dict:
    moment = occurred_at or datetime.now(UTC)
    return {
        "event_id": str(event_id or uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": moment.isoformat() if isinstance(moment, datetime) else moment,
        "source": source,
        "data": data,
    }


def publish_inbound(url: str, exchange: str, bodies: list, *, routing_keys: list[str] | None = None) -> None:
    """Publish as another service would: JSON body, routing key = event type."""
    with Connection(url) as conn:
        channel = conn.channel()
        target = broker.inbound_exchange(exchange)
        target(channel).declare()
        producer = Producer(channel, exchange=target)
        for index, body in enumerate(bodies):
            key = routing_keys[index] if routing_keys else (body.get("event_type") if isinstance(body, dict) else "x")
            raw = json.dumps(body) if isinstance(body, dict | list) else body
            producer.publish(raw, routing_key=key or "unknown", content_type="application/json", delivery_mode=2)
