"""Shared machinery for the benchmarks: data, servers, the load generator, the report.

Every benchmark module (`bench_<area>.py`) exposes `run(ctx: Context) -> Report`; `run.py` calls
them in turn, prints each report as a table and writes it to `artifacts/bench/<area>.json`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PERF_DIR = Path(__file__).resolve().parent
LUA_DIR = PERF_DIR / "lua"
ARTIFACTS = ROOT / "artifacts" / "bench"
WORK_DIR = ARTIFACTS / "work"  # id and term files for wrk, server logs
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customer_service")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# One production-like server configuration, used for the app under test and for its reference alike.
# 2 cores: 4 processes keep both cores busy while some wait on PostgreSQL/Redis; a few threads per
# process overlap that waiting and keep HTTP/1.1 connections alive (sync workers close every one).
GUNICORN_WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "4"))
GUNICORN_WORKER_CLASS = os.environ.get("BENCH_GUNICORN_WORKER_CLASS", "gthread")
GUNICORN_THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", "4"))

# What the Django app runs with under load: DEBUG off, persistent connections (base.py's default
# CONN_MAX_AGE=300), and a rate limit high enough not to turn the benchmark into a 429 test.
DJANGO_SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.local",
    "DJANGO_DEBUG": "false",
    "API_RATE_LIMIT_PER_MINUTE": "100000000",
}


class BenchError(RuntimeError):
    """A benchmark could not run (as opposed to: it ran and missed its target)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- run options and report


@dataclass
class Options:
    duration: int = 15  # seconds measured per scenario
    rounds: int = 3  # scenarios compared with a reference are measured in turns, in this many runs each
    warmup: int = 3  # seconds of the same load before each measurement, not counted
    connections: int = 32
    wrk_threads: int = 2
    customers: int = 1_000_000
    only: frozenset[str] = frozenset()  # scenario names; empty = all
    skip_load: bool = False

    def wants(self, scenario: str) -> bool:
        return not self.only or scenario in self.only


@dataclass
class Row:
    scenario: str
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int
    percent_of_reference: float | None = None
    target: str = ""
    passed: bool | None = None  # None: informational (the reference)
    failures: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


@dataclass
class Report:
    name: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    setup: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows)


@dataclass
class Context:
    options: Options
    run_id: str = field(default_factory=lambda: f"{int(time.time()):x}{os.getpid():x}")


def format_table(report: Report) -> str:
    headers = ["scenario", "req/s", "p50 ms", "p95 ms", "p99 ms", "% of reference", "target", "pass/fail"]
    lines = []
    for row in report.rows:
        verdict = "-" if row.passed is None else ("PASS" if row.passed else "FAIL")
        if row.failures:
            verdict += " (" + "; ".join(row.failures) + ")"
        lines.append(
            [
                row.scenario,
                f"{row.requests_per_second:,.0f}",
                f"{row.p50_ms:.1f}",
                f"{row.p95_ms:.1f}",
                f"{row.p99_ms:.1f}",
                "-" if row.percent_of_reference is None else f"{row.percent_of_reference:.0f}%",
                row.target or "-",
                verdict,
            ]
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *lines, strict=False)]
    numeric = {1, 2, 3, 4, 5}

    def render(cells: Sequence[str]) -> str:
        return " | ".join(
            str(cell).rjust(width) if index in numeric else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    out = [render(headers), "-+-".join("-" * width for width in widths)]
    out += [render(line) for line in lines]
    return "\n".join(out)


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def busy_processes(min_cpu: float = 15.0) -> list[str]:
    """Processes using CPU right now (sampled for a second): a benchmark beside them measures that contention too."""
    result = subprocess.run(
        ["top", "-b", "-n", "2", "-d", "1", "-w", "200"], capture_output=True, text=True, check=False, timeout=10
    )
    last = [line for line in result.stdout.split("top - ")[-1].splitlines() if line.strip()]  # the 1 s sample
    busy: list[str] = []
    header = next((index for index, line in enumerate(last) if line.split()[:1] == ["PID"]), None)
    if header is None:
        return busy
    for line in last[header + 1 :]:
        parts = line.split()
        if len(parts) >= 12 and parts[0].isdigit() and int(parts[0]) != os.getpid():
            try:
                cpu = float(parts[8])
            except ValueError:
                continue
            if cpu >= min_cpu:
                busy.append(f"{parts[11]}({parts[0]}) {cpu:.0f}%")
    return busy


def machine_speed() -> dict:
    """How fast this machine's cores are right now, in work that none of our code does: a Python loop
    and a PostgreSQL count, in ms (lower is faster). The same code has run 2.5-3.7x slower on some
    days than on others here; these two figures tell such a day from a regression."""
    started = time.perf_counter()
    total = 0
    for number in range(2_000_000):
        total += number * number
    python_ms = (time.perf_counter() - started) * 1000
    with connect() as conn:
        started = time.perf_counter()
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        postgres_ms = (time.perf_counter() - started) * 1000
    return {"python_loop_ms": round(python_ms), "postgres_count_ms": round(postgres_ms)}


@functools.cache
def source_revision() -> dict:
    """The commit measured (and whether the working tree had changes), or what BENCH_SOURCE_REV says.

    Read once, when the run starts (`run.py` asks first), even if commits land while it runs.
    """
    if os.environ.get("BENCH_SOURCE_REV"):
        return {"commit": os.environ["BENCH_SOURCE_REV"], "dirty": None}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def write_report(report: Report, options: Options) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{report.name}.json"
    document = {
        "benchmark": report.name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "source": source_revision(),
        "options": {**asdict(options), "only": sorted(options.only)},
        "server": {
            "gunicorn_workers": GUNICORN_WORKERS,
            "gunicorn_worker_class": GUNICORN_WORKER_CLASS,
            "gunicorn_threads": GUNICORN_THREADS,
        },
        "setup": report.setup,
        "passed": report.passed,
        "rows": [asdict(row) for row in report.rows],
        "notes": report.notes,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


# ---------------------------------------------------------------- prerequisites


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing; installing Debian's package")
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "-n", "apt-get"]
    install = subprocess.run([*apt, "install", "-y", "-q", "wrk"], capture_output=True, text=True, check=False)
    if install.returncode != 0:
        subprocess.run([*apt, "update", "-q"], capture_output=True, check=False)
        install = subprocess.run([*apt, "install", "-y", "-q", "wrk"], capture_output=True, text=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError(f"wrk is not installed and could not be installed: {install.stderr.strip()[-500:]}")
    return found


def ensure_services() -> None:
    try:
        with psycopg.connect(DATABASE_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        raise BenchError(f"PostgreSQL is not reachable at {DATABASE_URL}: {error}") from None
    try:
        redis_client().ping()
    except Exception as error:  # redis raises several kinds
        raise BenchError(f"Redis is not reachable at {REDIS_URL}: {error}") from None


def redis_client():
    import redis  # the app's dependency, in the venv

    return redis.Redis.from_url(REDIS_URL, socket_timeout=5)


def delete_keys(pattern: str) -> int:
    """Drop every Redis key matching `pattern` (SCAN + UNLINK, never KEYS or FLUSHDB)."""
    client = redis_client()
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def count_keys(pattern: str) -> int:
    return sum(1 for _ in redis_client().scan_iter(match=pattern, count=5000))


def django_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **DJANGO_SERVER_ENV, **(extra or {})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def manage(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env or django_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def issue_token(scopes: str, subject: str, ttl: int = 7200) -> str:
    token = manage("issue_token", "--scope", scopes, "--subject", subject, "--ttl", str(ttl)).splitlines()[-1]
    if token.count(".") != 2:
        raise BenchError(f"issue_token printed something that is not a JWT: {token[:80]!r}")
    return token


def check_django_settings() -> dict:
    """What the server will run with, read through the same settings module and environment."""
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'DEBUG': s.DEBUG, 'CONN_MAX_AGE': s.DATABASES['default']['CONN_MAX_AGE'], "
        "'API_RATE_LIMIT_PER_MINUTE': s.API_RATE_LIMIT_PER_MINUTE, "
        "'CACHE': s.CACHES['default']['BACKEND'], 'SETTINGS': s.SETTINGS_MODULE}))"
    )
    result = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=django_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"cannot load the Django settings:\n{result.stderr.strip()[-2000:]}")
    values = json.loads(result.stdout.strip().splitlines()[-1])
    if values["DEBUG"]:
        raise BenchError("DEBUG is on for the benchmark server; set DJANGO_DEBUG=false")
    if not values["CONN_MAX_AGE"]:
        raise BenchError("CONN_MAX_AGE is 0: the benchmark server would open a connection per request")
    return values


# ---------------------------------------------------------------- processes

_children: dict[int, subprocess.Popen] = {}


def _kill_children() -> None:
    for process in list(_children.values()):
        _stop_process(process)


def _on_signal(signum, frame):
    _kill_children()
    raise SystemExit(128 + signum)


atexit.register(_kill_children)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def _stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a child started in its own session, with everything it spawned (gunicorn's workers)."""
    _children.pop(process.pid, None)
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class GunicornServer:
    """`with GunicornServer("name", "module:app") as server:` — started, ready, and stopped on exit."""

    def __init__(self, name: str, app: str, *, env: dict[str, str], ready_path: str = "/health/live") -> None:
        self.name = name
        self.app = app
        self.env = env
        self.ready_path = ready_path
        self.port = free_port()
        self.log_path = WORK_DIR / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "gunicorn"),
            self.app,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(GUNICORN_WORKERS),
            "--worker-class",
            GUNICORN_WORKER_CLASS,
            "--threads",
            str(GUNICORN_THREADS),
            "--backlog",
            "2048",
            "--keep-alive",
            "30",
            "--timeout",
            "60",
            "--log-level",
            "warning",
            "--error-logfile",
            "-",
        ]

    def __enter__(self) -> GunicornServer:
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        if not port_is_free(self.port):
            raise BenchError(f"port {self.port} is taken")
        log(f"starting {self.name}: gunicorn {self.app} on {self.base_url}")
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with all its workers
            )
        _children[self.process.pid] = self.process
        try:
            self._wait_ready(timeout=60)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode} during start:\n{self.log_tail()}")
            try:
                status, body = http("GET", self.base_url + self.ready_path, timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        raise BenchError(f"{self.name} not ready after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise BenchError(f"{self.name} died:\n{self.log_tail()}")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            _stop_process(self.process)
            log(f"stopped {self.name}")


# ---------------------------------------------------------------- the load generator


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    statuses: dict[str, int]
    histogram_us: dict[int, int]  # latency in microseconds -> number of requests
    load_average: tuple[float, float] = (-1.0, -1.0)  # 1-minute load average before and after the run
    runs: int = 1

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile_ms(self, percent: float) -> float:
        total = sum(self.histogram_us.values())
        if not total:
            return 0.0
        rank = max(1, math.ceil(total * percent / 100))  # wrk's own definition: the value at that rank
        seen = 0
        for value in sorted(self.histogram_us):
            seen += self.histogram_us[value]
            if seen >= rank:
                return value / 1000
        return max(self.histogram_us) / 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90)

    @property
    def p95_ms(self) -> float:
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def max_ms(self) -> float:
        return max(self.histogram_us, default=0) / 1000


def merge_results(results: Sequence[WrkResult]) -> WrkResult:
    """Several runs of one scenario as one: requests and time add up, latency histograms merge exactly."""
    histogram: dict[int, int] = {}
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for result in results:
        for value, count in result.histogram_us.items():
            histogram[value] = histogram.get(value, 0) + count
        for key, count in result.errors.items():
            errors[key] = errors.get(key, 0) + count
        for key, count in result.statuses.items():
            statuses[key] = statuses.get(key, 0) + count
    return WrkResult(
        requests=sum(result.requests for result in results),
        duration_s=sum(result.duration_s for result in results),
        errors=errors,
        statuses=statuses,
        histogram_us=histogram,
        load_average=(results[0].load_average[0], results[-1].load_average[1]),
        runs=sum(result.runs for result in results),
    )


def run_wrk(
    url: str,
    script: str,
    args: Sequence[str],
    *,
    duration: int,
    connections: int,
    threads: int,
    timeout_s: int = 5,
) -> WrkResult:
    """Run wrk with one of `lua/*.lua`; the script's done() prints a `BENCH_JSON {...}` line."""
    wrk = ensure_wrk()
    command = [
        wrk,
        "--threads",
        str(threads),
        "--connections",
        str(connections),
        "--duration",
        f"{duration}s",
        "--timeout",
        f"{timeout_s}s",
        "--script",
        str(LUA_DIR / script),
        url,
        "--",
        *args,
    ]
    env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=duration + 60, check=False)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=data["errors"],
        statuses=data.get("statuses", {}),
        histogram_us={int(value): count for value, count in data["histogram_us"].items()},
    )


@dataclass
class Scenario:
    """One load to measure: a wrk script against a server, with hooks around every measured run."""

    name: str
    server: GunicornServer
    script: str
    args: Sequence[str] | Callable[[str], Sequence[str]]  # or a function of the phase: "warmup", "run1", ...
    before: Callable[[], None] | None = None  # before every measured run (e.g. flush or warm a cache)
    after: Callable[[WrkResult], None] | None = None  # after every measured run

    def args_for(self, phase: str) -> Sequence[str]:
        return self.args(phase) if callable(self.args) else self.args


def measure_interleaved(scenarios: Sequence[Scenario], options: Options, rounds: int | None = None) -> dict:
    """Warm every scenario up, then measure them in turns: `rounds` runs each of duration/rounds seconds.

    Interleaving puts the app and its reference under the same conditions even when something else on
    the machine comes and goes; the runs of a scenario are merged (histograms add up exactly).
    """
    rounds = max(1, rounds or options.rounds)
    seconds = max(2, round(options.duration / rounds))
    load = {"connections": options.connections, "threads": options.wrk_threads}
    for scenario in scenarios:
        if options.warmup > 0:
            scenario.server.check_alive()
            run_wrk(
                scenario.server.base_url, scenario.script, scenario.args_for("warmup"), duration=options.warmup, **load
            )
    runs: dict[str, list[WrkResult]] = {scenario.name: [] for scenario in scenarios}
    for turn in range(rounds):
        shift = turn % len(scenarios)
        for scenario in [*scenarios[shift:], *scenarios[:shift]]:  # rotate, so no scenario always goes first
            if scenario.before is not None:
                scenario.before()
            scenario.server.check_alive()
            log(f"measuring {scenario.name} ({turn + 1}/{rounds}) for {seconds}s at {options.connections} connections")
            load_before = load_average()
            result = run_wrk(
                scenario.server.base_url, scenario.script, scenario.args_for(f"run{turn + 1}"), duration=seconds, **load
            )
            result.load_average = (load_before, load_average())
            scenario.server.check_alive()
            if scenario.after is not None:
                scenario.after(result)
            runs[scenario.name].append(result)
    merged = {name: merge_results(results) for name, results in runs.items()}
    for name, result in merged.items():
        log(
            f"  {name}: {result.requests_per_second:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, {result.error_count} errors, statuses {result.statuses}"
        )
    return merged


def measure(scenario: Scenario, options: Options) -> WrkResult:
    """Warm up, then measure one scenario in a single run of the whole duration."""
    return measure_interleaved([scenario], options, rounds=1)[scenario.name]


def row_from(
    scenario: str,
    result: WrkResult,
    *,
    target: str = "",
    checks: Sequence[tuple[bool, str]] = (),
    reference: WrkResult | None = None,
    details: dict | None = None,
    expected_status: str = "200",
    max_error_ratio: float = 0.001,
) -> Row:
    percent = None
    if reference is not None and reference.requests_per_second:
        percent = 100 * result.requests_per_second / reference.requests_per_second
    failures = [message for ok, message in checks if not ok]
    unexpected = sum(count for status, count in result.statuses.items() if status != expected_status)
    errors = max(result.error_count, unexpected)
    if result.requests == 0:
        failures.append("no requests completed")
    elif errors / result.requests > max_error_ratio:
        failures.append(f"{errors} errors")
    return Row(
        scenario=scenario,
        requests_per_second=round(result.requests_per_second, 1),
        p50_ms=round(result.p50_ms, 2),
        p95_ms=round(result.p95_ms, 2),
        p99_ms=round(result.p99_ms, 2),
        requests=result.requests,
        errors=errors,
        percent_of_reference=None if percent is None else round(percent, 1),
        target=target,
        passed=(not failures) if target else (False if failures else None),
        failures=failures,
        details={
            "p90_ms": round(result.p90_ms, 2),
            "max_ms": round(result.max_ms, 2),
            "errors": result.errors,
            "statuses": result.statuses,
            "duration_s": round(result.duration_s, 2),
            "runs": result.runs,
            "load_average_before_after": result.load_average,
            **(details or {}),
        },
    )


def write_lines(name: str, values: Sequence[str]) -> Path:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = WORK_DIR / name
    path.write_text("\n".join(values) + "\n")
    return path


@contextlib.contextmanager
def timed(label: str) -> Iterator[dict]:
    info: dict = {}
    start = time.monotonic()
    try:
        yield info
    finally:
        info["seconds"] = round(time.monotonic() - start, 2)
        log(f"{label}: {info['seconds']:.1f}s")


def connect(**kwargs) -> psycopg.Connection:
    return psycopg.connect(DATABASE_URL, **kwargs)


# ---------------------------------------------------------------- data: one million customers

BENCH_EXTERNAL_ID_PREFIX = "bench-"  # marks bulk-loaded rows; the number after it numbers the email too


def _words(text: str) -> list[str]:
    return text.split()


FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Charles Karen Lukas Sophie Leon Marie Paul Emma Louis Camille Hugo Chloe "
    "Haruto Yui Sota Hina Miguel Ana Gabriel Julia Rafael Beatriz"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Wilson Anderson Taylor Thomas Moore Jackson "
    "Martin Lee Thompson White Harris Clark Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker "
    "Dubois Lefebvre Moreau Laurent Girard Sato Suzuki Takahashi Silva Santos Oliveira Pereira"
)
DOMAINS = _words(
    "gmail.com yahoo.com outlook.com hotmail.com icloud.com aol.com proton.me gmx.de web.de orange.fr "
    "free.fr yahoo.co.jp uol.com.br mail.com"
)
LOCALES = [  # (language, currency, timezone) for preferences
    ("en-US", "USD", "America/New_York"),
    ("en-GB", "GBP", "Europe/London"),
    ("de-DE", "EUR", "Europe/Berlin"),
    ("fr-FR", "EUR", "Europe/Paris"),
    ("ja-JP", "JPY", "Asia/Tokyo"),
    ("pt-BR", "BRL", "America/Sao_Paulo"),
]
AREA_CODES = [201, 212, 305, 312, 415, 503, 512, 617, 646, 702, 718, 773, 808, 917]


def _sql_array(values: Sequence) -> str:
    items = ",".join("'" + str(v).replace("'", "''") + "'" if isinstance(v, str) else str(v) for v in values)
    return f"ARRAY[{items}]"


# n numbers a bulk-loaded customer; everything about it is derived from n, so re-runs are stable.
# Names are spread with multipliers coprime to the list sizes so that first/last/domain vary independently.
_INSERT_CUSTOMERS = f"""
WITH src AS (
    SELECT
        n,
        ({_sql_array(FIRST_NAMES)})[1 + (n * 7) % {len(FIRST_NAMES)}] AS first_name,
        ({_sql_array(LAST_NAMES)})[1 + (n * 13 + n / 40) % {len(LAST_NAMES)}] AS last_name,
        ({_sql_array(DOMAINS)})[1 + (n * 11 + n / 7) % {len(DOMAINS)}] AS domain,
        now() - make_interval(secs => (n * 7919) % (3 * 365 * 86400)) AS created,
        ((n * 31) % 20)::int AS orders,
        (n * 7) % {len(FIRST_NAMES)} % 2 = 1 AS female  -- the name lists alternate male, female
    FROM generate_series(:first::bigint, :last::bigint) AS n
), ins AS (
    INSERT INTO customers_customer (
        id, email, first_name, last_name, phone, date_of_birth, gender, customer_type, company_name,
        registration_source, external_id, tags, metadata, custom_attributes, status, email_verified,
        phone_verified, registered_at, last_activity_at, last_login_at, created_at, updated_at, version,
        order_count, total_spent, spent_currency, average_order_value, last_order_at, loyalty_points,
        satisfaction_score, profile_completeness{{extra_customer_columns}}
    )
    SELECT
        gen_random_uuid(),
        lower(first_name || '.' || last_name || '.' || n || '@' || domain),
        first_name,
        last_name,
        CASE WHEN n % 5 = 0 THEN ''
             ELSE '+1' || ({_sql_array(AREA_CODES)})[1 + n % {len(AREA_CODES)}]
                  || (2000000 + (n * 7727) % 8000000)::text END,
        CASE WHEN n % 10 < 7 THEN date '1950-01-01' + ((n * 37) % 20000)::int END,
        CASE WHEN n % 10 = 9 THEN 'unknown' WHEN female THEN 'female' ELSE 'male' END,
        CASE WHEN n % 33 = 0 THEN 'business' ELSE 'individual' END,
        CASE WHEN n % 33 = 0 THEN last_name || ' & Co' ELSE '' END,
        'import',
        '{BENCH_EXTERNAL_ID_PREFIX}' || lpad(n::text, 9, '0'),
        CASE WHEN n % 9 = 0 THEN ARRAY['newsletter']::varchar[] ELSE ARRAY[]::varchar[] END,
        '{{{{}}}}'::jsonb,
        '{{{{}}}}'::jsonb,
        CASE WHEN n % 100 < 95 THEN 'active' WHEN n % 100 < 99 THEN 'inactive' ELSE 'suspended' END,
        n % 3 <> 0,
        false,
        created,
        CASE WHEN orders > 0 THEN LEAST(now(), created + make_interval(days => orders * 9)) END,
        CASE WHEN n % 4 <> 0 THEN LEAST(now(), created + make_interval(days => (n % 200)::int)) END,
        created,
        created,
        1,
        orders,
        orders * 42.50,
        'USD',
        CASE WHEN orders > 0 THEN 42.50 ELSE 0 END,
        CASE WHEN orders > 0 THEN LEAST(now(), created + make_interval(days => orders * 9)) END,
        orders * 10,
        CASE WHEN orders > 0 THEN 1 + (n % 5) END,
        CASE WHEN n % 10 < 7 AND n % 5 <> 0 THEN 100 WHEN n % 10 < 7 OR n % 5 <> 0 THEN 83 ELSE 67 END
        {{extra_customer_values}}
    FROM src
    ON CONFLICT DO NOTHING
    RETURNING id, created_at
)
INSERT INTO customers_customerpreferences (
    customer_id, language, currency, timezone, email_opt_in, sms_opt_in, push_opt_in, direct_mail_opt_in,
    notify_order_updates, notify_promotions, notify_newsletters, notify_system_alerts, data_sharing,
    analytics_tracking, personalization, third_party_sharing, theme, custom, updated_at{{extra_preferences_columns}}
)
SELECT
    id,
    ({_sql_array([loc[0] for loc in LOCALES])})[1 + get_byte(uuid_send(id), 0) % {len(LOCALES)}],
    ({_sql_array([loc[1] for loc in LOCALES])})[1 + get_byte(uuid_send(id), 0) % {len(LOCALES)}],
    ({_sql_array([loc[2] for loc in LOCALES])})[1 + get_byte(uuid_send(id), 0) % {len(LOCALES)}],
    get_byte(uuid_send(id), 1) % 3 = 0, false, get_byte(uuid_send(id), 2) % 4 = 0, false,
    true, get_byte(uuid_send(id), 1) % 3 = 0, false, true,
    false, get_byte(uuid_send(id), 3) % 2 = 0, get_byte(uuid_send(id), 3) % 2 = 0, false,
    'system', '{{{{}}}}'::jsonb, created_at{{extra_preferences_values}}
FROM ins
"""

# Any customer without preferences (the API's select_related needs the row) gets the defaults.
_INSERT_MISSING_PREFERENCES = """
INSERT INTO customers_customerpreferences (
    customer_id, language, currency, timezone, email_opt_in, sms_opt_in, push_opt_in, direct_mail_opt_in,
    notify_order_updates, notify_promotions, notify_newsletters, notify_system_alerts, data_sharing,
    analytics_tracking, personalization, third_party_sharing, theme, custom, updated_at{extra_preferences_columns}
)
SELECT c.id, 'en', 'USD', 'UTC', false, false, false, false, true, false, false, true,
       false, false, false, false, 'system', '{{}}'::jsonb, c.created_at{extra_preferences_values}
FROM customers_customer c
WHERE NOT EXISTS (SELECT 1 FROM customers_customerpreferences p WHERE p.customer_id = c.id)
"""

# Secondary indexes that are dropped during a large load and rebuilt afterwards (much faster than
# maintaining five trigram GIN indexes row by row). Unique indexes stay: ON CONFLICT needs them.
_DROPPABLE_INDEXES = """
SELECT i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = 'customers_customer' AND NOT x.indisunique AND NOT x.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
ORDER BY i.relname
"""
REBUILD_INDEXES_ABOVE = 200_000

# Columns added later that the statements above do not name, NOT NULL without a database default
# (Django drops the default after AddField): each gets its type's zero value.
_UNNAMED_REQUIRED_COLUMNS = """
SELECT column_name, data_type
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = %s AND is_nullable = 'NO' AND column_default IS NULL
  AND NOT (column_name = ANY(%s))
ORDER BY ordinal_position
"""
_ZERO_VALUES = {
    "boolean": "false",
    "smallint": "0",
    "integer": "0",
    "bigint": "0",
    "numeric": "0",
    "double precision": "0",
    "real": "0",
    "character varying": "''",
    "text": "''",
    "jsonb": "'{}'::jsonb",
    "json": "'{}'::json",
    "ARRAY": "'{}'",
    "timestamp with time zone": "now()",
    "date": "current_date",
}


def _named_columns(statement: str, table: str) -> list[str]:
    start = statement.index(f"INSERT INTO {table} (") + len(f"INSERT INTO {table} (")
    names = statement[start : statement.index(")", start)].replace("{", " ").replace("}", " ").split(",")
    return [name.split()[0] for name in names if name.split() and not name.split()[0].startswith("extra_")]


def _complete_statements(conn: psycopg.Connection) -> tuple[str, str]:
    """The two INSERT statements with every required column the data set does not know about yet."""
    extras: dict[str, str] = {}
    for table, key in (("customers_customer", "customer"), ("customers_customerpreferences", "preferences")):
        named = _named_columns(_INSERT_CUSTOMERS, table)
        columns, values = [], []
        for name, data_type in conn.execute(_UNNAMED_REQUIRED_COLUMNS, (table, named)).fetchall():
            if data_type not in _ZERO_VALUES:
                raise BenchError(f"{table}.{name} ({data_type}) is required and the loader has no value for it")
            columns.append(f', "{name}"')
            values.append(f", {_ZERO_VALUES[data_type]}")
        if columns:
            log(f"  {table}: filling {', '.join(c[3:-1] for c in columns)} with zero values")
        extras[f"extra_{key}_columns"] = "".join(columns)
        extras[f"extra_{key}_values"] = "".join(values)
    return _INSERT_CUSTOMERS.format(**extras), _INSERT_MISSING_PREFERENCES.format(**extras)


def ensure_customers(target: int) -> dict:
    """Top the customer table up to `target` rows with set-based SQL; returns what it did and how long it took."""
    started = time.monotonic()
    with connect(autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]
        missing_prefs = conn.execute(
            "SELECT count(*) FROM customers_customer c WHERE NOT EXISTS "
            "(SELECT 1 FROM customers_customerpreferences p WHERE p.customer_id = c.id)"
        ).fetchone()[0]
        info = {"target": target, "existing": total, "inserted": 0, "rebuilt_indexes": [], "load_seconds": 0.0}
        if total >= target and not missing_prefs:
            log(f"customers: {total:,} present (target {target:,}), nothing to load")
            return info
        log(f"customers: {total:,} present, loading {max(target - total, 0):,} (target {target:,})")
        insert_customers, insert_missing_preferences = _complete_statements(conn)
        attempts = 0
        while total < target:
            attempts += 1
            if attempts > 5:
                raise BenchError(f"could not top up customers to {target:,} (stuck at {total:,})")
            missing = target - total
            last = conn.execute(
                "SELECT external_id FROM customers_customer WHERE external_id LIKE %s "
                "ORDER BY external_id DESC LIMIT 1",
                (BENCH_EXTERNAL_ID_PREFIX + "%",),
            ).fetchone()
            first_n = int(last[0].removeprefix(BENCH_EXTERNAL_ID_PREFIX)) + 1 if last else 1
            with conn.transaction():
                conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
                dropped: list[tuple[str, str]] = []
                if missing >= REBUILD_INDEXES_ABOVE:
                    dropped = conn.execute(_DROPPABLE_INDEXES).fetchall()
                    for name, _ in dropped:
                        conn.execute(f'DROP INDEX "{name}"')
                step = time.monotonic()
                statement = insert_customers.replace(":first", str(int(first_n))).replace(
                    ":last", str(int(first_n + missing - 1))
                )
                cursor = conn.execute(statement)
                log(f"  inserted {cursor.rowcount:,} customers with preferences in {time.monotonic() - step:.1f}s")
                info["inserted"] += cursor.rowcount
                for name, definition in dropped:
                    step = time.monotonic()
                    conn.execute(definition)
                    log(f"  rebuilt index {name} in {time.monotonic() - step:.1f}s")
                info["rebuilt_indexes"] += [name for name, _ in dropped]
            total += cursor.rowcount  # (a count(*) now would first write hint bits on every new page)
        step = time.monotonic()
        fixed = conn.execute(insert_missing_preferences).rowcount
        if fixed:
            log(f"  added default preferences to {fixed:,} customers that had none")
        info["preferences_added"] = fixed
        conn.execute("VACUUM (ANALYZE) customers_customer")
        conn.execute("VACUUM (ANALYZE) customers_customerpreferences")
        log(f"  missing preferences, vacuum and analyze in {time.monotonic() - step:.1f}s")
        total = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]
        info["existing_after"] = total
    info["load_seconds"] = round(time.monotonic() - started, 1)
    log(f"customers: {total:,} present after loading for {info['load_seconds']:.1f}s")
    return info


def setup_django() -> None:
    """Django in this process, for benchmarks that call the services directly: the dev database,
    DEBUG off (no query log growing in memory)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DATABASE_URL"] = DATABASE_URL
    import django

    django.setup()


def percentile_of(sorted_values: list[float], percent: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(percent / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]
