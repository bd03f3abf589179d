"""The event contract, checked in every test of the suite: each event recorded matches its schema.

Imported by `tests/conftest.py`, so the fixture below is autouse everywhere: it watches
`customers.events.record_many` (which `record` goes through too) and, when the test ends, fails it
if any event it recorded has no schema in `<app>/event_schemas/` or does not validate.
"""

import pytest

from customers import events
from customers.messaging import schemas


def contract_problems(recorded) -> list[str]:
    problems = set()
    for event in recorded:
        for error in schemas.envelope_errors(events.envelope(event)):
            problems.add(f"{event.event_type}: {error}")
        for error in schemas.validation_errors(event.event_type, event.data):
            problems.add(f"{event.event_type}: {error}")
    return sorted(problems)


@pytest.fixture(autouse=True)
def _recorded_events_match_their_schemas(monkeypatch):
    recorded = []
    original = events.record_many

    def record_many(**kwargs):
        result = original(**kwargs)
        recorded.extend(result)
        return result

    monkeypatch.setattr(events, "record_many", record_many)
    yield recorded
    problems = contract_problems(recorded)
    if problems:
        pytest.fail(
            "Recorded events break their schema (see customers/messaging/schemas.py):\n  " + "\n  ".join(problems),
            pytrace=False,
        )
