"""The address book under load: GET /api/v1/customers/{id}/addresses for customers with 5 addresses.

Scenarios, measured in turns beside the reference (see `common.measure_interleaved`):

- reference:  `tests/perf/reference_app.py`, GET a random customer by id with one raw query
- addresses:  GET /api/v1/customers/{id}/addresses over SAMPLE customers holding 5 active addresses each

And the query count of that GET, in-process (Django test client, CaptureQueriesContext) for a
customer with 1, 5 and 10 addresses, written in a transaction that is rolled back: the target is that
it is the same for all three (constant, not one query per address).

Data: `common.ensure_customers` tops the customer table up; SAMPLE bulk-loaded customers are given
5 active addresses each here (set-based, once; the first is the default for shipping and billing).
"""

from __future__ import annotations

import os

from tests.perf import common
from tests.perf.common import BenchError, Context, GunicornServer, Report, Row, Scenario, log, row_from, write_lines

NAME = "addresses"
SCENARIOS = ("reference", "addresses", "queries")
SAMPLE = 2_000
PER_CUSTOMER = 5
QUERY_COUNTS_FOR = (1, 5, 10)
LABEL = "bench5"

_SAMPLE_SQL = """
SELECT c.id FROM customers_customer c
WHERE c.external_id LIKE 'bench-%%' AND c.status = 'active'
ORDER BY c.external_id
LIMIT %(sample)s
"""
# For each sampled customer, addresses number (active + 1) .. 5: the first of all is the default.
_TOP_UP_SQL = (
    """
WITH sample AS ("""
    + _SAMPLE_SQL
    + """),
have AS (
    SELECT s.id, (SELECT count(*) FROM addresses_address a WHERE a.customer_id = s.id AND a.deleted_at IS NULL) AS n
    FROM sample s
)
INSERT INTO addresses_address (
    id, customer_id, type, label, first_name, last_name, company, line1, line2, city, state, postal_code,
    country, phone, is_default_shipping, is_default_billing, is_validated, created_at, updated_at
)
SELECT gen_random_uuid(), h.id, CASE WHEN g = 1 THEN 'both' ELSE 'shipping' END, %(label)s, 'Ann', 'Lee', '',
       g::text || ' Main St', '', 'Springfield', 'IL', lpad((62700 + g)::text, 5, '0'), 'US', '',
       g = 1, g = 1, true, now() - make_interval(secs => 10 - g), now() - make_interval(secs => 10 - g)
FROM have h CROSS JOIN generate_series(1, %(per)s) AS g
WHERE g > h.n
"""
)


def _ensure_sample(conn) -> tuple[list[str], dict]:
    with conn.transaction():
        inserted = conn.execute(_TOP_UP_SQL, {"sample": SAMPLE, "per": PER_CUSTOMER, "label": LABEL}).rowcount
    ids = [str(row[0]) for row in conn.execute(_SAMPLE_SQL, {"sample": SAMPLE}).fetchall()]
    counts = conn.execute(
        "SELECT count(*) FROM addresses_address WHERE deleted_at IS NULL AND customer_id = ANY(%s::uuid[]) "
        "GROUP BY customer_id",
        (ids,),
    ).fetchall()
    sizes = sorted({row[0] for row in counts})
    if len(ids) < SAMPLE // 2:
        raise BenchError(f"only {len(ids)} bulk-loaded customers to sample (run without --skip-load)")
    if sizes != [PER_CUSTOMER]:
        raise BenchError(f"sampled customers hold {sizes} active addresses, not {PER_CUSTOMER} each")
    return ids, {"customers": len(ids), "addresses_each": PER_CUSTOMER, "inserted": inserted}


def _query_counts() -> dict[int, int]:
    """Queries of GET /customers/{id}/addresses for customers with 1, 5 and 10 addresses (rolled back)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DATABASE_URL"] = common.DATABASE_URL
    import django

    django.setup()
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from addresses import services as address_services
    from customers import services as customer_services
    from customers.actor import Actor
    from customers.auth import issue_token

    class _Rollback(Exception):
        pass

    actor = Actor.system("bench")
    counts: dict[int, int] = {}
    token = issue_token(scopes=["customers:read"], subject="bench-addresses")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/json")
    for size in QUERY_COUNTS_FOR:
        try:
            with transaction.atomic():
                customer = customer_services.customer_create(actor=actor, email=f"bench.addresses.{size}@example.com")
                for number in range(size):
                    address_services.address_create(
                        actor=actor,
                        customer_id=customer.pk,
                        type="shipping",
                        last_name="Lee",
                        line1=f"{number + 1} Main St",
                        city="Springfield",
                        state="IL",
                        postal_code="62701",
                        country="US",
                    )
                client.get(f"/api/v1/customers/{customer.pk}/addresses")  # warm: auth, rate limiter, caches
                with CaptureQueriesContext(connection) as queries:
                    response = client.get(f"/api/v1/customers/{customer.pk}/addresses")
                if response.status_code != 200 or len(response.json()["results"]) != size:
                    raise BenchError(
                        f"GET addresses for {size}: HTTP {response.status_code} {response.content[:200]!r}"
                    )
                counts[size] = len(queries)
                raise _Rollback
        except _Rollback:
            pass
    return counts


def _check(server: GunicornServer, token: str, customer_id: str) -> None:
    status, body = common.http(
        "GET",
        f"{server.base_url}/api/v1/customers/{customer_id}/addresses",
        headers={"Authorization": f"Bearer {token}"},
    )
    if status != 200 or body.count(b'"line1"') != PER_CUSTOMER:
        raise BenchError(f"GET addresses: HTTP {status}, wanted {PER_CUSTOMER} addresses: {body[:300]!r}")


def run(ctx: Context) -> Report:
    options = ctx.options
    report = Report(name=NAME, rows=[])
    if not options.skip_load:
        report.setup["load"] = common.ensure_customers(options.customers)
    with common.connect(autocommit=True) as conn:
        ids, report.setup["sample"] = _ensure_sample(conn)
    ids_file = write_lines("addresses-customer-ids.txt", ids)
    token = common.issue_token("customers:read", subject=f"bench-{ctx.run_id}")
    report.notes.append(
        f"{len(ids):,} customers with {PER_CUSTOMER} active addresses each, ids picked at random per request; "
        f"gunicorn --workers {common.GUNICORN_WORKERS} --threads {common.GUNICORN_THREADS} for the app and the "
        f"reference alike; wrk {options.wrk_threads} threads, {options.connections} connections; the reference "
        "and the GET measured in turns. The reference reads one customer row, not an address list: it is the "
        "floor of any GET on this machine, not the same work."
    )
    if options.wants("reference") or options.wants("addresses"):
        with (
            GunicornServer("django", "config.wsgi:application", env=common.django_env()) as server,
            GunicornServer("reference", "tests.perf.reference_app:application", env=common.django_env()) as ref,
        ):
            _check(server, token, ids[0])
            scenarios = [
                Scenario("reference", ref, "get_by_id.lua", [str(ids_file), "-"]),
                Scenario("addresses", server, "get_addresses.lua", [str(ids_file), token]),
            ]
            measured = common.measure_interleaved(scenarios, options)
        reference = measured["reference"]
        report.rows.append(row_from("reference: GET by id, raw psycopg + json.dumps (WSGI)", reference))
        report.rows.append(
            row_from(
                f"GET /api/v1/customers/{{id}}/addresses, {PER_CUSTOMER} addresses each",
                measured["addresses"],
                reference=reference,
                details={"customers": len(ids)},
            )
        )
    if options.wants("queries"):
        log("counting the queries of GET addresses for 1, 5 and 10 addresses")
        counts = _query_counts()
        constant = len(set(counts.values())) == 1
        report.rows.append(
            Row(
                scenario="queries of GET …/addresses for " + ", ".join(f"{n}: {q}" for n, q in counts.items()),
                requests_per_second=0.0,
                p50_ms=0.0,
                p95_ms=0.0,
                p99_ms=0.0,
                requests=len(counts),
                errors=0,
                percent_of_reference=None,
                target="same for 1, 5, 10 addresses",
                passed=constant,
                failures=[] if constant else ["the query count grows with the number of addresses"],
                details={"queries_by_addresses": counts},
            )
        )
    return report
