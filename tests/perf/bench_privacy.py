"""Data-subject rights on a million customers: one customer's export and erasure, and a retention sweep.

- export: `privacy.services.privacy_run_export` (the Celery job's work: every app's export, the JSON
  Schema check, the owner-only file moved in place on commit) for one customer with 10 addresses, 50
  history rows of their profile and 100 activity rows. Target < 2 s per export (p95 over the rounds).
- erasure: `privacy.services.privacy_run_erasure` (hold checks, every app's erasure, history, outbox,
  admin log, dead letters, staff exports, erasure log, the `customer.erased.v1` event) for customers
  built the same way, one per round. Target < 1 s per erasure (p95).
- retention: the inactive-customer policy of `privacy.retention` (hold checks set-based, batches of
  1,000) over the whole customer table, anonymizing 10,000 customers. Target < 60 s. Beside it,
  informational: the dry run (the same selection, counted).

Data: the million bench customers (`common.ensure_customers`) are only read. The customers this module
consumes are its own: created here (through the services for the rich ones, bulk for the sweep's
10,000, registered long before the retention cut-off) and deleted afterwards with what erasure kept of
them (customer rows, preferences, erasure log, outbox events), so reruns start clean. The few rich ones
(6 a run) hold consent records, which the database keeps append-only: they stay, erased.
The sweep runs with the inactivity period raised (in this process only) beyond the age of every bench
customer, so it consumes exactly the 10,000 made for it; the module refuses to run otherwise.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from datetime import timedelta

from tests.perf import common
from tests.perf.common import BenchError, Context, Report, Row, log

NAME = "privacy"
SCENARIOS = ("export", "erasure", "retention")
TARGET_EXPORT_S = 2.0
TARGET_ERASURE_S = 1.0
TARGET_SWEEP_S = 60.0
ADDRESSES = 10
HISTORY_ROWS = 50
ACTIVITY_ROWS = 100
EXPORT_ROUNDS = 5
ERASURE_ROUNDS = 5
SWEEP_CUSTOMERS = 10_000
SWEEP_YEARS = 20  # inactivity period for the sweep; the sweep's customers registered 25 years ago
MARK = "bench-privacy"
SWEEP_TABLES = (
    "customers_customer",
    "customers_historicalcustomer",
    "customers_outboxevent",
    "customers_accesslog",
    "customers_customeractivity",
    "segments_segmentmembership",
)




def _row(scenario, seconds: list[float], *, target="", limit=None, details=None, reference=None) -> Row:
    timings_ms = sorted(1000 * value for value in seconds)
    p95 = common.percentile_of(timings_ms, 95)
    passed = None if limit is None else p95 <= 1000 * limit
    percent = None
    if reference:
        percent = round(100 * statistics.median(timings_ms) / (1000 * reference), 1)
    return Row(
        scenario=scenario,
        requests_per_second=round(1000 * len(timings_ms) / sum(timings_ms), 2) if timings_ms else 0.0,
        p50_ms=round(common.percentile_of(timings_ms, 50), 1),
        p95_ms=round(p95, 1),
        p99_ms=round(common.percentile_of(timings_ms, 99), 1),
        requests=len(timings_ms),
        errors=0,
        percent_of_reference=percent,
        target=target,
        passed=passed,
        failures=[] if passed is not False else [f"p95 {p95 / 1000:.2f} s > {limit:.0f} s"],
        details=details or {},
    )


# ---------------------------------------------------------------- one rich customer


def _rich_customer(run_id: str, index: int):
    """A customer with 10 addresses, 50 profile history rows and 100 activity rows, through the services."""
    from addresses import services as address_services
    from customers import activity
    from customers import services as customer_services
    from customers.actor import Actor
    from customers.models import Customer, CustomerActivity

    actor = Actor.system(MARK)
    customer = customer_services.customer_create(
        actor=actor,
        email=f"{MARK}-{run_id}-{index}@bench.invalid",
        first_name="Privacy",
        last_name=f"Bench{index}",
        phone="+14155550100",
        external_id=f"{MARK}-{run_id}-{index}",
    )
    for n in range(ADDRESSES):
        address_services.address_create(
            actor=actor,
            customer_id=customer.pk,
            type="shipping",
            label=f"address {n}",
            first_name="Privacy",
            last_name=f"Bench{index}",
            line1=f"{n + 1} Bench Street",
            city="Springfield",
            postal_code="10115",
            country="DE",
        )
    while Customer.history.filter(id=customer.pk).count() < HISTORY_ROWS:
        count = Customer.history.filter(id=customer.pk).count()
        customer_services.customer_update(
            actor=actor, customer_id=customer.pk, changes={"company_name": f"Bench {index} rev {count}"}
        )
    for n in range(ACTIVITY_ROWS - CustomerActivity.objects.filter(customer_id=customer.pk).count()):
        activity.activity_track(actor=actor, customer_id=customer.pk, activity_type="page_view", summary=f"page {n}")
    return customer


def _request(customer, kind: str):
    from django.utils import timezone

    from privacy.models import DataSubjectRequest
    from privacy.services import due_date

    now = timezone.now()
    # Created in progress (as filing or approval leaves it), without queueing a Celery task: the
    # benchmark runs the job's own service in this process.
    return DataSubjectRequest.objects.create(
        customer=customer, kind=kind, status="in_progress", received_at=now, due_at=due_date(now), filed_by=MARK
    )


def _bench_export(report: Report, ctx: Context) -> list:
    from django.db import transaction

    from customers.actor import Actor
    from privacy import services

    actor = Actor.system(MARK)
    customer = _rich_customer(ctx.run_id, 0)
    seconds = []
    for turn in range(EXPORT_ROUNDS):
        request = _request(customer, "access")
        started = time.perf_counter()
        services.privacy_run_export(actor=actor, request_id=request.pk)
        seconds.append(time.perf_counter() - started)
        request.refresh_from_db()
        if request.status != "completed" or not os.path.exists(request.result_file):
            raise BenchError(f"export round {turn + 1} did not complete ({request.status})")
        size = os.path.getsize(request.result_file)
        log(f"  export round {turn + 1}: {seconds[-1]:.3f} s, {size:,} bytes")
    with transaction.atomic():  # not measured: the export customer goes the way of the others
        services.erase_customers(actor=actor, customer_ids=[customer.pk], trigger=MARK)
    report.rows.append(
        _row(
            "export (1 customer: 10 addresses, 50 history, 100 activity)",
            seconds,
            target=f"p95 < {TARGET_EXPORT_S:.0f} s",
            limit=TARGET_EXPORT_S,
            details={"document_bytes": size},
        )
    )
    return [customer.pk]


def _bench_erasure(report: Report, ctx: Context) -> list:
    from customers.actor import Actor
    from customers.models import Customer
    from privacy import services

    actor = Actor.system(MARK)
    seconds, ids, counts = [], [], {}
    for turn in range(ERASURE_ROUNDS):
        customer = _rich_customer(ctx.run_id, turn + 1)
        ids.append(customer.pk)
        request = _request(customer, "erasure")
        started = time.perf_counter()
        services.privacy_run_erasure(actor=actor, request_id=request.pk)
        seconds.append(time.perf_counter() - started)
        request.refresh_from_db()
        if request.status != "completed" or Customer.objects.get(pk=customer.pk).status != "erased":
            raise BenchError(f"erasure round {turn + 1} did not complete ({request.status} {request.status_reason})")
        counts = request.erasurelog_set.get().counts
        log(f"  erasure round {turn + 1}: {seconds[-1]:.3f} s")
    report.rows.append(
        _row(
            "erasure (1 customer: 10 addresses, 50 history, 100 activity)",
            seconds,
            target=f"p95 < {TARGET_ERASURE_S:.0f} s",
            limit=TARGET_ERASURE_S,
            details={"counts": counts},
        )
    )
    return ids


# ---------------------------------------------------------------- the retention sweep


def _make_sweep_customers(run_id: str) -> list:
    """10,000 customers of our own, with preferences and an address each, long inactive (set-based)."""
    from django.db import transaction
    from django.utils import timezone

    from addresses.models import Address
    from customers.models import Customer, CustomerPreferences

    long_ago = timezone.now() - timedelta(days=(SWEEP_YEARS + 5) * 366)
    customers = [
        Customer(
            id=uuid.uuid4(),
            email=f"{MARK}-sweep-{run_id}-{n}@bench.invalid",
            first_name="Sweep",
            last_name=f"Customer{n}",
            phone="+14155550199",
            external_id=f"{MARK}-sweep-{run_id}-{n}",
            registration_source="import",
            registered_at=long_ago,
            created_at=long_ago,
            updated_at=long_ago,
        )
        for n in range(SWEEP_CUSTOMERS)
    ]
    with transaction.atomic():
        Customer.objects.bulk_create(customers, batch_size=2000)
        CustomerPreferences.objects.bulk_create(
            [CustomerPreferences(customer_id=c.id) for c in customers], batch_size=2000
        )
        Address.objects.bulk_create(
            [
                Address(
                    customer_id=c.id,
                    type="both",
                    label="home",
                    first_name="Sweep",
                    last_name=c.last_name,
                    line1=f"{n} Sweep Road",
                    city="Springfield",
                    postal_code="10115",
                    country="DE",
                    is_default_shipping=True,
                    is_default_billing=True,
                )
                for n, c in enumerate(customers)
            ],
            batch_size=2000,
        )
    return [c.id for c in customers]


def _bench_sweep(report: Report, ctx: Context, conn) -> list:
    from django.conf import settings

    from customers.actor import Actor
    from customers.models import Customer
    from privacy import retention

    actor = Actor.system(MARK)
    settings.PRIVACY_RETENTION = {**settings.PRIVACY_RETENTION, "inactive_customer_years": SWEEP_YEARS}
    already, _ = retention.erasable_inactive_customers()
    if already.exists():
        raise BenchError(
            f"{already.count():,} customers are already inactive for {SWEEP_YEARS} years: the sweep would erase them"
        )
    started = time.monotonic()
    ids = _make_sweep_customers(ctx.run_id)
    # What autovacuum does on a live database, outside the measurement: after the other modules (or an
    # earlier run) the tables the sweep reads and writes hold millions of dead rows, and the sweep's
    # time then measures that bloat (66.9 s once, 15.1 s after this) rather than the sweep.
    for table in SWEEP_TABLES:
        conn.execute(f"VACUUM (ANALYZE) {table}")
    log(f"  {len(ids):,} sweep customers made in {time.monotonic() - started:.1f}s")
    total = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]

    started = time.perf_counter()
    dry = retention.POLICIES["inactive_customers"](actor, dry_run=True)
    dry_seconds = time.perf_counter() - started
    log(f"  dry run: {dry:,} in {dry_seconds:.1f} s")
    started = time.perf_counter()
    done = retention.POLICIES["inactive_customers"](actor, dry_run=False)
    seconds = time.perf_counter() - started
    erased = Customer.objects.filter(pk__in=ids, status="erased").count()
    log(f"  sweep: {done:,} anonymized in {seconds:.1f} s ({erased:,} of ours erased)")
    if done != SWEEP_CUSTOMERS or erased != SWEEP_CUSTOMERS or dry != done:
        raise BenchError(f"the sweep anonymized {done:,} (dry run {dry:,}, ours erased {erased:,})")
    details = {"customers_in_table": total, "anonymized": done, "batch_size": retention.BATCH_SIZE}
    report.rows.append(_row("retention dry run (count, informational)", [dry_seconds], details={"counted": dry}))
    report.rows.append(
        _row(
            f"retention sweep ({SWEEP_CUSTOMERS:,} of {total:,} anonymized)",
            [seconds],
            target=f"< {TARGET_SWEEP_S:.0f} s",
            limit=TARGET_SWEEP_S,
            details=details,
            reference=dry_seconds,
        )
    )
    return ids


# ---------------------------------------------------------------- cleaning up


def _remove(customer_ids: list, since) -> dict:
    """Delete what is left of the customers this module made (erasure keeps ids, consent proof, logs)."""
    from django.db import connection, transaction

    from consent.models import ConsentState
    from customers.models import Customer, CustomerPreferences, OutboxEvent
    from privacy.models import DataSubjectRequest, ErasureLog

    if not customer_ids:
        return {}
    subjects = [str(pk) for pk in customer_ids]
    removed = {}
    with transaction.atomic():
        removed["outbox"] = OutboxEvent.objects.filter(subject__in=subjects).delete()[0]
        logs = ErasureLog.objects.filter(performed_at__gte=since, performed_by__contains=MARK)
        removed["erasure_logs"] = logs.delete()[0]
        removed["requests"] = DataSubjectRequest.history.filter(customer_id__in=customer_ids).delete()[0]
        removed["requests"] += DataSubjectRequest.objects.filter(customer_id__in=customer_ids).delete()[0]
        # The consent proof is append-only (a database trigger refuses DELETE): customers with consent
        # records stay, erased (a few per run: the ones made through customer_create); the rest go.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT customer_id FROM consent_consentrecord WHERE customer_id = ANY(%s::uuid[])", [subjects]
            )
            kept = {row[0] for row in cursor.fetchall()}
        removed["kept_erased_with_consent_proof"] = len(kept)
        customer_ids = [pk for pk in customer_ids if pk not in kept]
        removed["consent_states"] = ConsentState.objects.filter(customer_id__in=customer_ids).delete()[0]
        removed["customers"] = Customer.objects.filter(pk__in=customer_ids).delete()[0]
        removed["customer_history"] = Customer.history.filter(id__in=customer_ids).delete()[0]
        removed["preferences_history"] = CustomerPreferences.history.filter(customer_id__in=customer_ids).delete()[0]
    return removed


def run(ctx: Context) -> Report:
    options = ctx.options
    report = Report(name=NAME, rows=[])
    if not options.skip_load:
        report.setup["load"] = common.ensure_customers(options.customers)
    common.setup_django()
    from django.conf import settings
    from django.utils import timezone

    since = timezone.now()
    made: list = []
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as directory, common.connect(autocommit=True) as conn:
        settings.PRIVACY_EXPORT_DIR = directory
        report.setup["customers"] = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]
        try:
            if options.wants("export"):
                log("measuring one customer's export")
                made += _bench_export(report, ctx)
            if options.wants("erasure"):
                log("measuring one customer's erasure")
                made += _bench_erasure(report, ctx)
            if options.wants("retention"):
                log("measuring the retention sweep")
                made += _bench_sweep(report, ctx, conn)
        finally:
            started = time.monotonic()
            report.setup["removed"] = _remove(made, since)
            log(f"  removed this module's customers in {time.monotonic() - started:.1f}s: {report.setup['removed']}")
    report.notes.append(
        "in-process service calls (no HTTP server, no Celery worker), one at a time, against the dev database; "
        "the customers measured are made for it and removed afterwards"
    )
    return report
