"""Where the time of one customers API request goes: cProfile + SQL and Redis call counts, in-process.

    .venv/bin/python tests/perf/profile_customers.py get_hit|get_miss|search|create [--requests 300] [--top 30]

Calls the project's WSGI application directly, as gunicorn would (the whole middleware and DRF stack,
no HTTP parsing), with the benchmark's settings: config.settings.local, DEBUG off, persistent
connections. CPU time by default (`--clock wall` includes waiting on PostgreSQL and Redis).
Needs the customers `make bench` loads (or any customers).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
os.environ["DJANGO_DEBUG"] = "false"
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "100000000")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from redis.client import Redis  # noqa: E402

from customers.auth import issue_token  # noqa: E402
from tests.perf.bench_customers import search_term  # noqa: E402


class RedisCalls:
    """Counts Redis commands (pipelines count once per execute)."""

    def __init__(self) -> None:
        self.count = 0
        self._original = Redis.execute_command

    def __enter__(self) -> RedisCalls:
        counter = self

        def counting(redis, *args, **kwargs):
            counter.count += 1
            return counter._original(redis, *args, **kwargs)

        Redis.execute_command = counting
        return self

    def __exit__(self, *exc_info) -> None:
        Redis.execute_command = self._original


class Response:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content


class WSGIClient:
    """Calls the WSGI application the way a server does: environ in, iterate and close the body."""

    def __init__(self, token: str) -> None:
        self.application = get_wsgi_application()
        self.token = token

    def request(self, method: str, path: str, query: str = "", body: bytes = b"") -> Response:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_ACCEPT": "application/json",
            "HTTP_AUTHORIZATION": f"Bearer {self.token}",
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json" if body else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []

        def start_response(status_line, headers, exc_info=None):
            status.append(status_line)

        result = self.application(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()  # request_finished: Django keeps or closes the DB connection here
        return Response(int(status[0].split()[0]), content)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["get_hit", "get_miss", "search", "create"])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="cumulative", help="pstats sort key (cumulative, tottime)")
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default="cpu", help="cpu: this thread's CPU time (default); wall: elapsed"
    )
    parser.add_argument("--no-profile", action="store_true", help="only the plain timing, no cProfile pass")
    args = parser.parse_args(argv)
    assert not settings.DEBUG, "DEBUG must be off for a meaningful profile"

    token = issue_token(scopes=["customers:read", "customers:write"], subject="bench-profile", ttl_seconds=3600)
    client = WSGIClient(token)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text, email FROM customers_customer ORDER BY random() LIMIT %s", [args.requests])
        sample = cursor.fetchall()
    run_id = f"{int(time.time()):x}"
    # Seeded per run: a fixed seed gave every run the phones of the run before, so each create found
    # duplicate candidates and counted their queries (new customers rarely share a phone).
    rng = random.Random(run_id)

    def request(index: int, phase: str = "m"):
        customer_id, email = sample[index % len(sample)]
        if args.scenario in ("get_hit", "get_miss"):
            if args.scenario == "get_miss":
                cache.delete(f"customer::{customer_id}")
            return client.request("GET", f"/api/v1/customers/{customer_id}"), 200
        if args.scenario == "search":
            term = search_term(email, rng) or email[:4]
            return client.request("GET", "/api/v1/customers", urlencode({"q": term})), 200
        phone = f"+1{rng.choice(['206', '303', '404', '480', '602'])}{rng.randint(2000000, 9999999)}"  # rarely shared
        body = {"email": f"profile.{run_id}{phase}.{index}@example.com", "first_name": "Pro", "phone": phone}
        return client.request("POST", "/api/v1/customers", body=json.dumps(body).encode()), 201

    # warm up: imports, connections, caches of the URL resolver and serializers
    for index in range(20):
        response, expected = request(index, "w")
        assert response.status_code == expected, (response.status_code, response.content[:300])
    if args.scenario == "get_hit":
        for index in range(args.requests):
            request(index)

    # first without any instrumentation: what one request really costs, single-threaded
    cpu_started, wall_started = time.thread_time(), time.perf_counter()
    for index in range(args.requests):
        response, expected = request(index, "p")
        assert response.status_code == expected, (response.status_code, response.content[:300])
    plain_cpu_ms = (time.thread_time() - cpu_started) * 1000 / args.requests
    plain_wall_ms = (time.perf_counter() - wall_started) * 1000 / args.requests
    print(
        f"{args.scenario}: {plain_cpu_ms:.2f} ms CPU in this process and {plain_wall_ms:.2f} ms elapsed per request "
        f"(mean of {args.requests}, no profiler)"
    )

    if args.no_profile:
        return 0

    timings = []
    profiler = cProfile.Profile(time.thread_time if args.clock == "cpu" else time.perf_counter)
    cpu_started = time.thread_time()
    with CaptureQueriesContext(connection) as queries, RedisCalls() as redis_calls:
        for index in range(args.requests):
            started = time.perf_counter()
            profiler.enable()
            response, expected = request(index)
            profiler.disable()
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == expected, (response.status_code, response.content[:300])

    cpu_ms = (time.thread_time() - cpu_started) * 1000 / args.requests
    per_request = len(queries.captured_queries) / args.requests
    print(
        f"under cProfile: mean {statistics.mean(timings):.2f} ms, median {statistics.median(timings):.2f} ms elapsed, "
        f"{cpu_ms:.2f} ms CPU per request; "
        f"{per_request:.1f} SQL queries and {redis_calls.count / args.requests:.1f} Redis commands per request"
    )
    seen: dict[str, list[float]] = {}
    for query in queries.captured_queries:
        sql = query["sql"]
        shape = sql.split(" WHERE ")[0][:100] if sql.startswith("SELECT") else sql[:100]
        seen.setdefault(shape, []).append(float(query["time"]) * 1000)
    total_ms = sum(sum(times) for times in seen.values()) / args.requests
    print(f"\nSQL statements (grouped), {total_ms:.2f} ms per request waiting on PostgreSQL in all:")
    for shape, times in sorted(seen.items(), key=lambda item: -sum(item[1]))[:25]:
        print(f"  {len(times) / args.requests:4.1f}/req {sum(times) / args.requests:7.2f} ms/req  {shape}")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
