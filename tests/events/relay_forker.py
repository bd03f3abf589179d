"""Start relays and consumers fast for the fault tests: Django starts once here, each is a fork of it.

Run as `python -m tests.events.relay_forker` with the test database and broker in the environment.
Reads lines from stdin: `spawn <name>` forks a process running `manage.py relay_events` (the
command itself, through `call_command`) whose database connection carries `application_name=<name>`
and prints its pid; `consumer <name>` does the same with `manage.py consume_events` (exchange and
queue from EVENTS_INBOUND_EXCHANGE / EVENTS_INBOUND_QUEUE); `quit` stops every child with SIGTERM
and exits. The fault tests kill the children with SIGKILL directly; a fork takes milliseconds where
a fresh `manage.py` takes seconds on a busy machine, so a test can kill many within its time bound.
"""

import contextlib
import os
import signal
import sys
import time

import django


def _relay(name: str) -> None:
    from django.core.management import call_command
    from django.db import connections

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    connections["default"].settings_dict.setdefault("OPTIONS", {})["application_name"] = name
    call_command("relay_events", "--batch-size", "20", "--poll", "0.02")


def _consumer(name: str) -> None:
    from django.core.management import call_command
    from django.db import connections

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    connections["default"].settings_dict.setdefault("OPTIONS", {})["application_name"] = name
    call_command("consume_events", "--batch-size", "40", "--batch-wait-ms", "20")


def main() -> None:
    django.setup()
    from django.db import connections

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    children: list[int] = []
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "quit":
            break
        connections.close_all()  # a child must open its own connection, never share ours
        pid = os.fork()
        if pid == 0:
            try:
                (_consumer if command == "consumer" else _relay)(name)
            finally:
                os._exit(0)
        children.append(pid)
        print(pid, flush=True)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in children:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


if __name__ == "__main__":
    main()
