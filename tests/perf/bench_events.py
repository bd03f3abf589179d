"""Events (`make bench`): relay throughput out, `order.created.v1` ingestion in, beside raw broker rates.

Per broker (Redis, and RabbitMQ when one answers at BENCH_EVENTS_AMQP_URL), in this process, on the
development database:

* raw publish (the reference): the same envelopes published by our kombu publisher (batches of
  500, publisher confirms on RabbitMQ, one pipeline per batch on Redis) without any database: what
  the broker and kombu allow on this machine, measured in the same run;
* relay: N outbox rows published by `relay_batch` until none is left (claim with SKIP LOCKED,
  publish, confirm, mark published), events/s from outbox to broker; target >= 5,000/s;
* inbound: N `order.created.v1` messages waiting in our inbound queue, applied by the consumer
  (batches of BENCH_EVENTS_INBOUND_BATCH, each a handful of set-based statements: inbox dedupe, order
  upsert with the activity entries, one metrics UPDATE recording the metrics events; on Redis the
  consumer's own atomic batch receive), events/s from the first message to the last commit; the
  customers' metrics are checked against what was sent; target >= 10,000/s. Beside it, the same
  consumer with a no-op apply (raw consume + parse).

The bench uses its own customers (external id `evbench-…`, created once) and its own exchange and
queues, and removes its outbox rows, orders, inbox rows, activity and metrics changes afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from tests.perf import common
from tests.perf.common import BenchError, Context, Report, Row, log

NAME = "events"
RELAY_EVENTS = int(os.environ.get("BENCH_RELAY_EVENTS", "50000"))
INBOUND_EVENTS = int(os.environ.get("BENCH_INBOUND_EVENTS", "50000"))
BENCH_CUSTOMERS = 10_000
PREFIX = "evbench-"  # not "bench-…": that prefix marks the numbered bulk-loaded customers
TARGET_OUT, TARGET_IN = 5_000, 10_000
BROKERS = {
    "redis": os.environ.get("BENCH_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "rabbitmq": os.environ.get("BENCH_EVENTS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
BATCH = int(os.environ.get("BENCH_EVENTS_BATCH", "500"))
INBOUND_BATCH = int(os.environ.get("BENCH_EVENTS_INBOUND_BATCH", str(BATCH)))
CHURNED_TABLES = (
    "customers_outboxevent",
    "customers_inboxmessage",
    "customers_customerorder",
    "customers_customeractivity",
    "customers_customer",
)


def _reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def _row(scenario, count, seconds, *, target=0, reference=None, failures=(), details=None) -> Row:
    rate = count / seconds if seconds else 0.0
    failures = list(failures)
    if target and rate < target:
        failures.append(f"{rate:,.0f}/s < {target:,}/s")
    return Row(
        scenario=scenario,
        requests_per_second=round(rate, 1),
        p50_ms=0.0,
        p95_ms=0.0,
        p99_ms=0.0,
        requests=count,
        errors=0,
        percent_of_reference=round(100 * rate / reference, 1) if reference else None,
        target=f">= {target:,} events/s" if target else "",
        passed=None if not target else not failures,
        failures=failures,
        details={"seconds": round(seconds, 3), **(details or {})},
    )


# ---------------------------------------------------------------- data


def _bench_customers() -> list:
    """The bench's own customers (created once, set-based), their metrics reset to zero."""
    with common.connect(autocommit=True) as conn:
        present = conn.execute(
            "SELECT count(*) FROM customers_customer WHERE external_id LIKE %s", (PREFIX + "%",)
        ).fetchone()[0]
        if present < BENCH_CUSTOMERS:
            conn.execute(
                """
                INSERT INTO customers_customer (
                    id, email, first_name, last_name, phone, gender, customer_type, company_name,
                    registration_source, external_id, tags, metadata, custom_attributes, status, email_verified,
                    phone_verified, registered_at, created_at, updated_at, version, order_count, open_order_count,
                    total_spent, spent_currency, average_order_value, loyalty_points, profile_completeness,
                    processing_restricted
                )
                SELECT gen_random_uuid(), 'bench.events.' || n || '@example.com', 'Bench', 'Events', '', 'unknown',
                       'individual', '', 'import', %s || lpad(n::text, 6, '0'), '{}', '{}', '{}', 'active', false,
                       false, now(), now(), now(), 1, 0, 0, 0, 'EUR', 0, 0, 50, false
                FROM generate_series(1, %s) AS n
                ON CONFLICT DO NOTHING
                """,
                (PREFIX, BENCH_CUSTOMERS),
            )
            # Every customer has its preferences row (the service creates them together); without it
            # the customers bench's reference, which joins them, answered 404 for these customers.
            _, missing_preferences = common._complete_statements(conn)
            conn.execute(missing_preferences)
        return [
            row[0]
            for row in conn.execute(
                "SELECT id FROM customers_customer WHERE external_id LIKE %s ORDER BY external_id", (PREFIX + "%",)
            ).fetchall()
        ]


def _cleanup(customer_ids: list, exchange_names: list[str], url: str | None = None) -> None:
    with common.connect(autocommit=True) as conn:
        subjects = [str(customer_id) for customer_id in customer_ids]
        conn.execute("DELETE FROM customers_outboxevent WHERE source = 'bench-events'")
        conn.execute("DELETE FROM customers_outboxevent WHERE subject = ANY(%s)", (subjects,))
        conn.execute("DELETE FROM customers_inboxmessage WHERE source = 'bench-events'")
        conn.execute("DELETE FROM customers_customeractivity WHERE customer_id = ANY(%s)", (customer_ids,))
        conn.execute("DELETE FROM customers_customerorder WHERE order_id LIKE %s", (PREFIX + "%",))
        conn.execute(
            "UPDATE customers_customer SET order_count = 0, open_order_count = 0, total_spent = 0,"
            " average_order_value = 0, last_order_at = NULL, version = 1 WHERE id = ANY(%s)",
            (customer_ids,),
        )
        # What autovacuum would do (it is off on this server): without it every run leaves the rows
        # of the last behind, dead, in the tables and indexes the next one writes and probes.
        for table in CHURNED_TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")
    if url:
        from kombu import Connection, Exchange, Queue

        with Connection(url) as conn:
            channel = conn.channel()
            for name in exchange_names:
                for queue in (f"{name}.q",):
                    with contextlib.suppress(Exception):
                        Queue(queue, channel=channel).delete()
                with contextlib.suppress(Exception):
                    Exchange(name, type="topic", channel=channel).delete()


# ---------------------------------------------------------------- scenarios


def _envelope(event_type: str, data: dict, subject: str = "") -> str:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "occurred_at": datetime.now(UTC).isoformat(),
            "source": "bench-events",
            "subject": subject,
            "data": data,
            "metadata": {"correlation_id": str(uuid.uuid4())},
        }
    )


def raw_publish(url: str, exchange: str, customer_ids: list, count: int) -> float:
    """Our publisher without the database: the broker's and kombu's ceiling. Returns seconds."""
    from kombu import Connection

    from customers.messaging import broker, relay

    with Connection(url) as conn:
        broker.outbound_exchange(exchange)(conn.channel()).declare()
        _bind(conn, exchange)
    rows = [
        relay.Row(
            uuid.uuid4(),
            "customer.updated.v1",
            str(customer_ids[i % len(customer_ids)]),
            None,
            i,
            _envelope(
                "customer.updated.v1",
                {
                    "customer_id": str(customer_ids[i % len(customer_ids)]),
                    "changed_fields": ["first_name"],
                    "version": 2,
                },
            ),
        )
        for i in range(count)
    ]
    publisher = relay.Publisher(url=url, exchange=exchange)
    started = time.perf_counter()
    try:
        for start in range(0, count, BATCH):
            outcomes = publisher.publish(rows[start : start + BATCH])
            if any(outcomes):
                raise BenchError(f"raw publish failed: {next(o for o in outcomes if o)}")
    finally:
        publisher.close()
    return time.perf_counter() - started


def _bind(conn, exchange: str) -> None:
    """A queue on the exchange, so the broker really routes and stores what is published."""
    from kombu import Exchange, Queue

    Queue(f"{exchange}.q", exchange=Exchange(exchange, type="topic", durable=True), routing_key="#", durable=True)(
        conn.channel()
    ).declare()


def relay_out(url: str, exchange: str, customer_ids: list, count: int) -> tuple[float, int]:
    """N outbox rows (older than anything else, so they go first) relayed until none is left."""
    from kombu import Connection

    from customers.messaging import relay

    with Connection(url) as conn:
        _bind(conn, exchange)
    with common.connect(autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO customers_outboxevent
                (event_id, event_type, occurred_at, source, subject, data, metadata, attempts, last_error)
            SELECT gen_random_uuid(), 'customer.updated.v1',
                   timestamptz '1990-01-01' + make_interval(secs => n / 1000.0), 'bench-events', ids.id::text,
                   jsonb_build_object('customer_id', ids.id::text, 'changed_fields', jsonb_build_array('first_name'),
                                      'version', 2),
                   jsonb_build_object('correlation_id', gen_random_uuid()::text), 0, ''
            FROM generate_series(1, %s) AS n
            JOIN LATERAL (SELECT (%s::uuid[])[1 + n %% %s] AS id) ids ON true
            """,
            (count, customer_ids, len(customer_ids)),
        )
        conn.execute("ANALYZE customers_outboxevent")
    publisher = relay.Publisher(url=url, exchange=exchange)
    published = 0
    started = time.perf_counter()
    try:
        while True:
            result = relay.relay_batch(publisher, batch_size=BATCH)
            published += result.published
            if result.failed:
                raise BenchError(f"relay failed: {result.errors[-1]}")
            if result.claimed < BATCH:
                break
    finally:
        publisher.close()
    seconds = time.perf_counter() - started
    with common.connect(autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM customers_outboxevent WHERE source = 'bench-events' AND published_at IS NULL"
        ).fetchone()[0]
    return seconds, left


def _order_bodies(customer_ids: list, count: int) -> tuple[list[str], dict]:
    """N order.created.v1 envelopes round-robin over the customers, and the expected orders per customer."""
    expected: dict = {}
    bodies = []
    placed = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count):
        customer_id = customer_ids[i % len(customer_ids)]
        expected[customer_id] = expected.get(customer_id, 0) + 1
        data = {
            "order_id": f"{PREFIX}{i}",
            "customer_id": str(customer_id),
            "total": "10.00",
            "currency": "EUR",
            "status": "open",
            "placed_at": (placed + timedelta(seconds=i)).isoformat(),
        }
        bodies.append(_envelope("order.created.v1", data))
    return bodies, expected


def _preload_orders(url: str, exchange: str, queue: str, customer_ids: list, count: int) -> dict:
    """Publish N order.created.v1 into our inbound queue (not measured); returns the expected orders per customer."""
    from kombu import Connection, Producer

    from customers.messaging import broker

    consumer_queue = broker.inbound_queue(routing_keys=["order.created.v1"], name=queue, exchange=exchange)
    bodies, expected = _order_bodies(customer_ids, count)
    with Connection(url) as conn:
        channel = conn.channel()
        consumer_queue(channel).declare()
        producer = Producer(channel, exchange=broker.inbound_exchange(exchange))
        with broker.bindings_cached(channel), producer.batch(max_size=2 * count + 10):
            for body in bodies:
                producer.publish(
                    body,
                    routing_key="order.created.v1",
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                )
    return expected


def apply_alone(customer_ids: list, count: int) -> tuple[float, int, dict]:
    """The database's part alone: apply_batch over parsed messages, one connection, no broker, no overlap.
    Returns (seconds, applied, expected)."""
    from django.db import connection

    from customers.messaging import inbound

    bodies, expected = _order_bodies(customer_ids, count)
    messages = [inbound.parse(body, "order.created.v1") for body in bodies]
    applied = 0
    started = time.perf_counter()
    for start in range(0, count, INBOUND_BATCH):
        applied += inbound.apply_batch(messages[start : start + INBOUND_BATCH]).applied
    seconds = time.perf_counter() - started
    connection.close()
    return seconds, applied, expected


def consume(url: str, exchange: str, queue: str, count: int, *, apply=None) -> tuple[float, object]:
    """Run the consumer until the queue is drained; seconds from its first message to its last commit."""
    from customers.messaging import inbound
    from customers.messaging.consumer import InboundConsumer

    real_apply = apply or inbound.apply_batch
    marks: dict = {}

    def timed_apply(messages):
        marks.setdefault("first", time.perf_counter())
        outcome = real_apply(messages)
        marks["last"] = time.perf_counter()
        return outcome

    consumer = InboundConsumer(
        url=url,
        exchange=exchange,
        queue=queue,
        routing_keys=["order.created.v1"],
        batch_size=INBOUND_BATCH,
        batch_wait_ms=20,
        apply=timed_apply,
    )
    started = time.perf_counter()
    stats = consumer.run(idle_seconds=2.0, max_seconds=max(120, count / 200))
    seconds = marks.get("last", time.perf_counter()) - started  # the queue was full from the start
    return seconds, stats


def _check_metrics(expected: dict) -> list[str]:
    with common.connect(autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, order_count, open_order_count, total_spent FROM customers_customer WHERE id = ANY(%s)",
            (list(expected),),
        ).fetchall()
    wrong = [
        customer_id
        for customer_id, orders, open_orders, spent in rows
        if (orders, open_orders, float(spent))
        != (expected[customer_id], expected[customer_id], 10.0 * expected[customer_id])
    ]
    return [f"{len(wrong)} customers with wrong metrics"] if wrong else []


@contextlib.contextmanager
def _other_apps_subscribers(*, detached: bool):
    """Detach the after-commit subscribers of customer.metrics.updated.v1, per event and per batch (segments
    queues a Celery task per batch there) to show what the ingestion itself costs; attached again afterwards."""
    from customers import events

    if not detached:
        yield
        return
    registries = (events._after_commit, events._after_commit_batch)
    saved = [list(registry.get(events.CUSTOMER_METRICS_UPDATED, ())) for registry in registries]
    for registry in registries:
        registry[events.CUSTOMER_METRICS_UPDATED] = []
    try:
        yield
    finally:
        for registry, handlers in zip(registries, saved, strict=True):
            registry[events.CUSTOMER_METRICS_UPDATED] = handlers


def _noop(messages):
    from customers.messaging.inbound import Outcome

    return Outcome(applied=len(messages))


def run(ctx: Context) -> Report:
    report = Report(name=NAME, rows=[])
    common.setup_django()
    from django.db import connection

    customer_ids = _bench_customers()
    report.setup.update(
        {"bench_customers": len(customer_ids), "relay_events": RELAY_EVENTS, "inbound_events": INBOUND_EVENTS}
    )
    report.notes += [
        f"in-process, one relay (batches of {BATCH}) and one consumer (batches of {INBOUND_BATCH}, two apply "
        "workers); the reference is our kombu publisher without the database (publisher confirms on RabbitMQ, one "
        "pipeline per batch on Redis), measured in the same run.",
        "inbound: events/s from the consumer's start (queue already full) to its last commit; every batch: inbox "
        "insert, order upsert with activity entries, one metrics UPDATE for its customers recording one "
        "customer.metrics.updated.v1 per changed customer, cache invalidation and after-commit subscribers. 'as "
        "wired': with every app's subscribers (segments queues one Celery task per batch); 'customers' own work "
        "only': the same with those after-commit subscribers detached.",
        f"before each scenario (not measured) the bench's rows are deleted and {', '.join(CHURNED_TABLES)} "
        "vacuumed and analyzed, as autovacuum would (it is off on this server).",
    ]
    for broker_name, url in BROKERS.items():
        if not _reachable(url):
            report.notes.append(f"{broker_name}: not reachable at {url}, skipped")
            continue
        suffix = f"{ctx.run_id}.{broker_name}"
        out_exchange, in_exchange, in_queue = (
            f"bench.customer.events.{suffix}",
            f"bench.platform.events.{suffix}",
            (f"bench.inbound.{suffix}"),
        )
        try:
            _cleanup(customer_ids, [])
            log(f"{broker_name}: raw publish of {RELAY_EVENTS:,} events")
            raw_seconds = raw_publish(url, out_exchange + ".raw", customer_ids, RELAY_EVENTS)
            raw_rate = RELAY_EVENTS / raw_seconds
            report.rows.append(_row(f"{broker_name}: raw publish (reference)", RELAY_EVENTS, raw_seconds))
            log(f"  {raw_rate:,.0f} events/s")

            log(f"{broker_name}: relay of {RELAY_EVENTS:,} outbox rows")
            seconds, left = relay_out(url, out_exchange, customer_ids, RELAY_EVENTS)
            row = _row(
                f"{broker_name}: relay outbox -> broker",
                RELAY_EVENTS - left,
                seconds,
                target=TARGET_OUT,
                reference=raw_rate,
                failures=[f"{left} rows left unpublished"] if left else [],
            )
            report.rows.append(row)
            log(f"  {row.requests_per_second:,.0f} events/s")

            log(f"{broker_name}: raw consume of {INBOUND_EVENTS:,} messages (no database)")
            _preload_orders(url, in_exchange + ".raw", in_queue + ".raw", customer_ids, INBOUND_EVENTS)
            seconds, stats = consume(url, in_exchange + ".raw", in_queue + ".raw", INBOUND_EVENTS, apply=_noop)
            report.rows.append(
                _row(
                    f"{broker_name}: raw consume + parse (reference)",
                    stats.received,
                    seconds,
                    reference=raw_rate,
                )
            )

            for wired in (True, False):
                label = "as wired" if wired else "customers' own work only"
                log(f"{broker_name}: inbound ingestion of {INBOUND_EVENTS:,} order.created.v1 ({label})")
                _cleanup(customer_ids, [])
                queue = in_queue + (".wired" if wired else ".own")
                expected = _preload_orders(url, in_exchange, queue, customer_ids, INBOUND_EVENTS)
                connection.close()
                with _other_apps_subscribers(detached=not wired):
                    seconds, stats = consume(url, in_exchange, queue, INBOUND_EVENTS)
                failures = _check_metrics(expected)
                if stats.applied != INBOUND_EVENTS:
                    failures.append(f"{stats.applied:,} applied of {INBOUND_EVENTS:,} ({stats.parked} parked)")
                row = _row(
                    f"{broker_name}: inbound order.created.v1 applied, {label}",
                    stats.applied,
                    seconds,
                    target=TARGET_IN if wired else 0,
                    reference=raw_rate,
                    failures=failures,
                    details={"batches": stats.batches, "duplicates": stats.duplicates, "parked": stats.parked},
                )
                if not wired and failures:
                    row.failures, row.passed = failures, False
                report.rows.append(row)
                log(f"  {row.requests_per_second:,.0f} events/s, metrics {failures or 'right'}")
                _delete_queues(url, [queue])
        finally:
            _cleanup(
                customer_ids,
                [out_exchange, out_exchange + ".raw", in_exchange, in_exchange + ".raw"],
                url,
            )
            _delete_queues(url, [in_queue, in_queue + ".raw"])
            _forget_redis_keys(url, suffix)
    if not report.rows:
        raise BenchError("no broker reachable")
    # After the brokers' runs, so that it meets the tables as the ingestion runs did (each after a cleanup).
    log(f"inbound: set-based apply of {INBOUND_EVENTS:,} order.created.v1 alone (no broker)")
    _cleanup(customer_ids, [])
    seconds, applied, expected = apply_alone(customer_ids, INBOUND_EVENTS)
    failures = _check_metrics(expected)
    if applied != INBOUND_EVENTS:
        failures.append(f"{applied:,} applied of {INBOUND_EVENTS:,}")
    row = _row("inbound: apply_batch alone, one connection, no broker (reference)", applied, seconds, failures=failures)
    if failures:
        row.passed = False
    report.rows.append(row)
    log(f"  {row.requests_per_second:,.0f} events/s, metrics {failures or 'right'}")
    _cleanup(customer_ids, [])
    return report


def _forget_redis_keys(url: str, suffix: str) -> None:
    """On Redis, every key of this run (queues with their priority lists, exchange bindings): kombu's
    Queue.delete there only removes queues bound through the same channel, so the relay's and the
    consumer's queues stayed behind, with their messages (about 150 MB a run)."""
    if not url.startswith("redis"):
        return
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"*{suffix}*", count=1000))
    if keys:
        client.delete(*keys)


def _delete_queues(url: str, names: list[str]) -> None:
    from kombu import Connection, Queue

    with Connection(url) as conn:
        channel = conn.channel()
        for name in names:
            with contextlib.suppress(Exception):
                Queue(name, channel=channel).delete()
