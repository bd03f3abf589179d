"""`make bench`: run every benchmark module, print its table, write artifacts/bench/<name>.json.

    .venv/bin/python tests/perf/run.py [--duration 15] [--only get_hit,search] [--skip-load]

Exit status: 0 when every target is met, 1 when a target is missed, 2 when a benchmark could not run.
A benchmark module is `tests/perf/bench_<name>.py` with `run(ctx) -> Report`; add it to MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.perf import common  # noqa: E402 - needs the project root on sys.path first

MODULES = [
    "tests.perf.bench_customers",
    "tests.perf.bench_segments",
    "tests.perf.bench_events",
    "tests.perf.bench_backoffice",
    "tests.perf.bench_privacy",
    "tests.perf.bench_addresses",
]


def parse_args(argv: list[str]) -> tuple[common.Options, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds measured per scenario (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per scenario (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns in which the reference and the GETs are measured (default 3)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--customers", type=int, default=1_000_000, help="rows to load (default 1,000,000)")
    parser.add_argument("--only", default="", help="comma-separated scenario names, e.g. get_hit,get_miss")
    parser.add_argument("--module", action="append", help="benchmark module(s) to run, e.g. customers")
    parser.add_argument("--skip-load", action="store_true", help="do not top up the customer table")
    parser.add_argument(
        "--wait-quiet",
        type=int,
        default=0,
        metavar="SECONDS",
        help="on a shared machine: wait up to this long for other processes to stop using CPU before each module",
    )
    args = parser.parse_args(argv)
    options = common.Options(
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        wrk_threads=args.wrk_threads,
        customers=args.customers,
        only=frozenset(name.strip() for name in args.only.split(",") if name.strip()),
        skip_load=args.skip_load,
    )
    modules = MODULES
    if args.module:
        modules = [f"tests.perf.bench_{name.removeprefix('bench_')}" for name in args.module]
    return options, modules, args.wait_quiet


def wait_until_quiet(limit: int) -> list[str]:
    """Wait (up to `limit` seconds) until no other process uses much CPU; returns those still busy."""
    deadline = time.monotonic() + limit
    busy = common.busy_processes()
    quiet_since = None if busy else time.monotonic()
    while limit > 0 and time.monotonic() < deadline:
        if not busy and quiet_since is not None and time.monotonic() - quiet_since >= 5:
            break
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        time.sleep(2)
        busy = common.busy_processes()
    return busy


def main(argv: list[str]) -> int:
    options, modules, wait_quiet = parse_args(argv)
    started = time.monotonic()
    try:
        common.ensure_wrk()
        common.ensure_services()
    except common.BenchError as error:
        print(f"bench: cannot run: {error}", file=sys.stderr)
        return 2
    common.source_revision()  # the commit being measured, before anything else can land
    ctx = common.Context(options=options)
    loaded = [importlib.import_module(name) for name in modules]
    known = {scenario for module in loaded for scenario in getattr(module, "SCENARIOS", ())}
    if options.only - known:
        print(f"bench: unknown scenario(s) {sorted(options.only - known)}; known: {sorted(known)}", file=sys.stderr)
        return 2
    status = 0
    for module_name, module in zip(modules, loaded, strict=True):
        common.log(f"=== {module_name}")
        if wait_quiet:
            common.log(f"waiting up to {wait_quiet}s for the machine to be quiet")
        busy = wait_until_quiet(wait_quiet)
        if busy:
            common.log(f"warning: other processes are using CPU ({', '.join(busy)}); the figures will include that")
        speed = common.machine_speed()
        try:
            report = module.run(ctx)
        except common.BenchError as error:
            print(f"\nbench: {module_name} could not run: {error}", file=sys.stderr)
            status = 2
            continue
        busy_after = common.busy_processes()
        if busy or busy_after:
            report.notes.append(
                "other processes were using CPU during the run (the reference shares that contention): "
                f"before {', '.join(busy) or 'none'}; after {', '.join(busy_after) or 'none'}"
            )
        report.setup["machine_speed_before"] = speed
        report.notes.append(
            f"machine speed before this module (lower is faster; compare runs of different days by it): "
            f"a 2M-step Python loop {speed['python_loop_ms']} ms, "
            f"PostgreSQL counting 3M rows {speed['postgres_count_ms']} ms"
        )
        path = common.write_report(report, options)
        print(f"\n{report.name}\n")
        print(common.format_table(report))
        for note in report.notes:
            print(f"  * {note}")
        print(f"\n  written to {path.relative_to(common.ROOT)}\n", flush=True)
        if not report.passed and status == 0:
            status = 1
    common.log(f"done in {time.monotonic() - started:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
