"""The customers API under load, beside a minimal reference app measured in the same run.

Scenarios, each warmed up and measured at the same concurrency; the reference and the two GETs in
turns (see `common.measure_interleaved`), search and create alone:

- reference: `tests/perf/reference_app.py`, GET a random customer by id with one raw query
- get_hit:   GET /api/v1/customers/{id} over 100 ids whose representation is cached
- get_miss:  GET /api/v1/customers/{id} over 200,000 random ids, cache flushed before the run
- search:    GET /api/v1/customers?q=<3-6 characters of a real email's local part>
- create:    POST /api/v1/customers with a unique email per request
"""

from __future__ import annotations

import contextlib
import json
import random
import re

from tests.perf import common
from tests.perf.common import (
    BenchError,
    Context,
    GunicornServer,
    Report,
    Scenario,
    measure,
    measure_interleaved,
    row_from,
    write_lines,
)

NAME = "customers"
SCENARIOS = ("reference", "get_hit", "get_miss", "search", "create")
CACHE_KEYS = "*customer::*"  # django-redis stores `customer::{id}` as `:1:customer::{id}`

HOT_IDS = 100
COLD_IDS = 200_000
SEARCH_TERMS = 2_000

TARGET_HIT_PERCENT = 60.0
TARGET_HIT_P99_MS = 50.0
TARGET_MISS_PERCENT = 35.0
TARGET_SEARCH_P95_MS = 50.0
TARGET_CREATE_P99_MS = 100.0


def search_term(email: str, rng: random.Random) -> str | None:
    """3-6 characters of the email's local part that tell one customer apart: what a rep types to find them.

    The window (3-6 characters drawn) holds three digits at least of the number that ends the local part,
    e.g. `a.482`, `.4821`, `482913`; digits alone only from five on. Shorter or vaguer windows (`.47`,
    `500`) are not distinctive among a million customers: they match thousands.
    """
    local = email.split("@", 1)[0]
    digits = re.search(r"\d+$", local)
    if digits is None or len(digits.group()) < 3:
        return None
    for _ in range(10):
        length = rng.randint(3, 6)
        lowest = max(0, digits.start() - length + 3)  # at least three digits inside the window
        highest = len(local) - length
        if highest < lowest:
            return None
        start = rng.randint(lowest, highest)
        term = local[start : start + length]
        if not term.isdigit() or len(term) >= 5:
            return term
    return None


def _sample() -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(2026)
    with common.connect() as conn:
        rows = conn.execute(
            "SELECT id::text, email FROM customers_customer ORDER BY random() LIMIT %s", (COLD_IDS,)
        ).fetchall()
    if len(rows) < COLD_IDS // 2:
        raise BenchError(f"only {len(rows)} customers to sample from")
    cold = [row[0] for row in rows]
    hot = cold[:HOT_IDS]
    terms: list[str] = []
    for _, email in rows:
        term = search_term(email, rng)
        if term:
            terms.append(term)
        if len(terms) >= SEARCH_TERMS:
            break
    if not terms:
        raise BenchError("no search terms could be made from the sampled emails")
    return hot, cold, terms


def _expect(status: int, body: bytes, wanted: int, what: str) -> dict:
    if status != wanted:
        raise BenchError(f"{what}: HTTP {status} (wanted {wanted}): {body[:500]!r}")
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"{what}: not JSON: {body[:200]!r}") from None


def _check_reference(server: GunicornServer, customer_id: str) -> None:
    body = _expect(*common.http("GET", f"{server.base_url}/api/v1/customers/{customer_id}"), 200, "reference GET")
    if body.get("id") != customer_id:
        raise BenchError(f"reference GET answered another customer: {body.get('id')}")


def _check_django(server: GunicornServer, token: str, customer_id: str, term: str) -> None:
    """One request of each kind succeeds, the cache is used, and DEBUG is really off in the server."""
    status, body = common.http("GET", f"{server.base_url}/bench-no-such-page")
    if status != 404 or b"URLconf" in body or b"Traceback" in body:
        raise BenchError("the server answers like DEBUG=True (technical 404 page); refusing to benchmark it")
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url = f"{server.base_url}/api/v1/customers/{customer_id}"
    common.delete_keys(f"*customer::{customer_id}")
    first = _expect(*common.http("GET", url, headers=auth), 200, "GET customer")
    if first.get("id") != customer_id or "preferences" not in first:
        raise BenchError(f"GET customer answered something else: {str(first)[:300]}")
    if common.count_keys(f"*customer::{customer_id}") != 1:
        raise BenchError("GET customer did not cache the representation under customer::{id} in Redis db 0")
    second = _expect(*common.http("GET", url, headers=auth), 200, "GET customer (cached)")
    if second != first:
        raise BenchError("the cached representation differs from the uncached one")
    found = _expect(*common.http("GET", f"{server.base_url}/api/v1/customers?q={term}", headers=auth), 200, "search")
    if "results" not in found:
        raise BenchError(f"search answered without results: {str(found)[:300]}")


def _check_create(server: GunicornServer, token: str, run_id: str) -> None:
    body = json.dumps(
        {"email": f"precheck.b{run_id}@example.com", "first_name": "Pre", "last_name": "Check", "phone": "+14155550100"}
    ).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    created = _expect(
        *common.http("POST", f"{server.base_url}/api/v1/customers", headers=headers, body=body), 201, "POST"
    )
    if not created.get("customer_number"):
        raise BenchError(f"POST answered without a customer number: {str(created)[:300]}")


def _measure_gets(options, server, reference_server, token, hot, hot_file, cold_file) -> dict:
    """The reference and the two GETs, measured in turns; also returns how many requests missed the cache."""
    auth = {"Authorization": f"Bearer {token}"}
    wants_get = reference_server is not None

    def warm_hot_ids() -> None:
        for customer_id in hot:
            url = f"{server.base_url}/api/v1/customers/{customer_id}"
            _expect(*common.http("GET", url, headers=auth), 200, "warming the cache")

    misses = {"stored": 0, "requests": 0}

    def flush() -> None:
        common.delete_keys(CACHE_KEYS)

    def count_misses(result) -> None:  # every miss stores one key; a repeated id is a hit
        misses["stored"] += common.count_keys(CACHE_KEYS)
        misses["requests"] += result.requests

    scenarios = []
    if wants_get:
        scenarios.append(Scenario("reference", reference_server, "get_by_id.lua", [str(cold_file), "-"]))
    if options.wants("get_hit"):
        common.delete_keys(CACHE_KEYS)
        warm_hot_ids()
        scenarios.append(Scenario("get_hit", server, "get_by_id.lua", [str(hot_file), token], before=warm_hot_ids))
    if options.wants("get_miss"):
        scenarios.append(
            Scenario("get_miss", server, "get_by_id.lua", [str(cold_file), token], before=flush, after=count_misses)
        )
    measured = measure_interleaved(scenarios, options) if scenarios else {}
    measured["misses"] = misses
    return measured


def _percent(result, reference) -> float | None:
    if reference is None or not reference.requests_per_second:
        return None
    return 100 * result.requests_per_second / reference.requests_per_second


def run(ctx: Context) -> Report:
    options = ctx.options
    report = Report(name=NAME, rows=[])
    if not options.skip_load:
        report.setup["load"] = common.ensure_customers(options.customers)
    with common.connect() as conn:
        total = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]
    report.setup["customers"] = total
    if total < options.customers:
        raise BenchError(f"{total:,} customers in the database, {options.customers:,} wanted (run without --skip-load)")

    hot, cold, terms = _sample()
    hot_file = write_lines("customers-hot-ids.txt", hot)
    cold_file = write_lines("customers-cold-ids.txt", cold)
    terms_file = write_lines("customers-search-terms.txt", terms)
    report.setup["search_term_examples"] = terms[:10]
    settings = common.check_django_settings()
    report.setup["django_settings"] = settings
    token = common.issue_token("customers:read customers:write", subject=f"bench-{ctx.run_id}")
    report.notes += [
        f"{total:,} customers; gunicorn --workers {common.GUNICORN_WORKERS} --worker-class "
        f"{common.GUNICORN_WORKER_CLASS} --threads {common.GUNICORN_THREADS} for the app and the reference alike; "
        f"wrk {options.wrk_threads} threads, {options.connections} connections, {options.warmup}s warm-up, "
        f"{options.duration}s measured per scenario, all on this machine ({common.os.cpu_count()} CPUs).",
        f"the reference and both GETs are measured in turns ({options.rounds} runs of "
        f"~{max(2, round(options.duration / max(1, options.rounds)))}s each, merged), so they share whatever else "
        "the machine is doing; search and create run once for the whole duration.",
        f"Django: {settings['SETTINGS']} with DJANGO_DEBUG=false (DEBUG={settings['DEBUG']}), "
        f"CONN_MAX_AGE={settings['CONN_MAX_AGE']}; API_RATE_LIMIT_PER_MINUTE=100000000 so that the POST and GET "
        "runs are not rate limited (the limiter still runs: one Redis INCR+EXPIRE per request).",
        f"search terms: 3-6 characters of a sampled customer's email local part overlapping its number, "
        f"e.g. {', '.join(repr(t) for t in terms[:5])}",
    ]
    wants_get = options.wants("reference") or options.wants("get_hit") or options.wants("get_miss")

    with GunicornServer("django", "config.wsgi:application", env=common.django_env()) as server:
        _check_django(server, token, cold[0], terms[0])
        with contextlib.ExitStack() as reference_stack:  # the reference runs only beside the GETs
            reference_server = None
            if wants_get:
                reference_server = reference_stack.enter_context(
                    GunicornServer("reference", "tests.perf.reference_app:application", env=common.django_env())
                )
                _check_reference(reference_server, cold[0])
            measured = _measure_gets(options, server, reference_server, token, hot, hot_file, cold_file)

        reference = measured.get("reference")
        if reference is not None:
            report.rows.append(
                row_from("reference: GET by id, raw psycopg + json.dumps (WSGI)", reference, details={"ids": len(cold)})
            )
        if "get_hit" in measured:
            result = measured["get_hit"]
            percent = _percent(result, reference)
            report.rows.append(
                row_from(
                    "GET /api/v1/customers/{id}, cache hit",
                    result,
                    reference=reference,
                    target=f">= {TARGET_HIT_PERCENT:.0f}% of ref, p99 < {TARGET_HIT_P99_MS:.0f} ms",
                    checks=[
                        (percent is None or percent >= TARGET_HIT_PERCENT, f"< {TARGET_HIT_PERCENT:.0f}% of reference"),
                        (result.p99_ms < TARGET_HIT_P99_MS, f"p99 >= {TARGET_HIT_P99_MS:.0f} ms"),
                    ],
                    details={"ids": len(hot)},
                )
            )
        if "get_miss" in measured:
            result = measured["get_miss"]
            percent = _percent(result, reference)
            misses = measured["misses"]
            miss_ratio = min(1.0, misses["stored"] / misses["requests"]) if misses["requests"] else 0.0
            report.rows.append(
                row_from(
                    "GET /api/v1/customers/{id}, cache miss",
                    result,
                    reference=reference,
                    target=f">= {TARGET_MISS_PERCENT:.0f}% of ref",
                    checks=[
                        (
                            percent is None or percent >= TARGET_MISS_PERCENT,
                            f"< {TARGET_MISS_PERCENT:.0f}% of reference",
                        )
                    ],
                    details={"ids": len(cold), "miss_ratio": round(miss_ratio, 4)},
                )
            )
            report.notes.append(f"cache-miss runs: {miss_ratio:.1%} of requests missed the cache ({len(cold):,} ids)")

        if options.wants("search"):
            result = measure(Scenario("search", server, "search.lua", [str(terms_file), token]), options)
            report.rows.append(
                row_from(
                    "GET /api/v1/customers?q=<partial email>",
                    result,
                    target=f"p95 < {TARGET_SEARCH_P95_MS:.0f} ms",
                    checks=[(result.p95_ms < TARGET_SEARCH_P95_MS, f"p95 >= {TARGET_SEARCH_P95_MS:.0f} ms")],
                    details={"terms": len(terms)},
                )
            )

        if options.wants("create"):
            _check_create(server, token, ctx.run_id)
            result = measure(
                Scenario("create", server, "create.lua", lambda phase: [token, f"{ctx.run_id}{phase[0]}{phase[-1]}"]),
                options,
            )
            report.rows.append(
                row_from(
                    "POST /api/v1/customers",
                    result,
                    target=f"p99 < {TARGET_CREATE_P99_MS:.0f} ms",
                    checks=[(result.p99_ms < TARGET_CREATE_P99_MS, f"p99 >= {TARGET_CREATE_P99_MS:.0f} ms")],
                    expected_status="201",
                )
            )
            report.notes.append(
                f"create: {result.requests:,} customers were registered in the measured run (emails "
                f"*.b{ctx.run_id}*@example.com, plus the warm-up's); they stay, with their history, consent and "
                "outbox rows"
            )
    return report
