"""CI runs the broker tests against RabbitMQ too, and fails (never skips) when a broker is down."""

import re
from pathlib import Path

import pytest

from tests.events import conftest

CI = Path(__file__).resolve().parents[2] / ".ci" / "run"


def test_ci_starts_rabbitmq_and_requires_every_broker_before_the_test_command():
    script = CI.read_text()
    test_command = script.index("\nmake test")
    start = script.find("rabbitmq-server -detached")
    export = re.search(r"^export EVENTS_TESTS_REQUIRE_ALL_BROKERS=1$", script, re.MULTILINE)
    assert 0 <= start < test_command, "CI must start RabbitMQ before running the tests"
    assert "127.0.0.1/5672" in script[:test_command], "CI must check RabbitMQ's port before starting it"
    assert export is not None and export.start() < test_command


def test_an_unreachable_broker_fails_the_test_when_all_brokers_are_required(monkeypatch):
    monkeypatch.setitem(conftest.BROKERS, "rabbitmq", "amqp://guest:guest@127.0.0.1:1//")
    monkeypatch.setenv("EVENTS_TESTS_REQUIRE_ALL_BROKERS", "1")
    with pytest.raises(pytest.fail.Exception):
        conftest.require("rabbitmq")
    monkeypatch.delenv("EVENTS_TESTS_REQUIRE_ALL_BROKERS")
    with pytest.raises(pytest.skip.Exception):
        conftest.require("rabbitmq")
