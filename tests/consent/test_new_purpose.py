"""A new purpose (or a first wording taking effect) leaves no customer without a recorded state."""

from datetime import timedelta

import pytest
from django.utils import timezone

from consent import selectors, services
from consent.models import ConsentRecord, ConsentState, ConsentStatus
from customers.actor import Actor
from customers.models import Customer
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus
SYSTEM = Actor.system("tests")


def _purpose(code="surveys"):
    return services.purpose_create(actor=SYSTEM, code=code, name="Surveys")


def _version(purpose, label, *, days_ago: float):
    return services.policy_version_create(
        actor=SYSTEM,
        purpose_id=purpose.pk,
        version=label,
        notice_text=f"May we ask you about your orders? ({label})",
        effective_at=timezone.now() - timedelta(days=days_ago),
    )


def _share(code: str) -> float:
    return next(row for row in selectors.recorded_state_share() if row["purpose"] == code)["share"]


def test_every_customer_gets_not_requested_when_a_new_purposes_first_version_takes_effect(
    django_capture_on_commit_callbacks,
):
    existing = [CustomerFactory() for _ in range(3)]
    erased = CustomerFactory()
    Customer.objects.filter(pk=erased.pk).update(status="erased")
    purpose = _purpose()
    # Registered while the purpose had no wording: nothing could be recorded then.
    late = CustomerFactory()
    assert not ConsentState.objects.filter(purpose=purpose).exists()

    with django_capture_on_commit_callbacks(execute=True):
        _version(purpose, "v1", days_ago=0)

    states = ConsentState.objects.filter(purpose=purpose)
    assert set(states.values_list("customer_id", flat=True)) >= {c.pk for c in [*existing, late]}
    assert not states.filter(customer=erased).exists()
    assert set(states.values_list("status", flat=True)) == {S.NOT_REQUESTED}
    records = ConsentRecord.objects.filter(purpose=purpose)
    assert set(records.values_list("actor", "source", "trigger")) == {
        ("system:consent_new_policy", "system", "backfill")
    }
    assert _share("surveys") == 1.0


def test_a_later_version_queues_nothing_more(django_capture_on_commit_callbacks):
    purpose = _purpose()
    with django_capture_on_commit_callbacks(execute=True) as first:
        _version(purpose, "v1", days_ago=1)
    with django_capture_on_commit_callbacks(execute=True) as second:
        _version(purpose, "v2", days_ago=0)
    assert (len(first), len(second)) == (1, 0)


def test_a_first_version_still_to_come_records_once_it_takes_effect(django_capture_on_commit_callbacks):
    customer = CustomerFactory()
    purpose = _purpose()
    with django_capture_on_commit_callbacks(execute=True):
        version = _version(purpose, "v1", days_ago=-10)  # queued for its effective moment
    assert not ConsentState.objects.filter(purpose=purpose).exists()  # nothing in force yet
    with django_capture_on_commit_callbacks(execute=True):
        services.policy_version_update(
            actor=SYSTEM, policy_version_id=version.pk, changes={"effective_at": timezone.now() - timedelta(hours=1)}
        )
    assert ConsentState.objects.get(customer=customer, purpose=purpose).status == S.NOT_REQUESTED


def test_the_daily_safety_net_is_scheduled():
    from config.celery_app import app

    entry = app.conf.beat_schedule["consent-record-missing-states"]
    assert entry["task"] == "consent.tasks.record_missing_states"
    assert "consent.tasks.record_missing_states" in app.tasks
