"""Tracked activity moves the customer's `last_activity_at` as a metrics change: version and event."""

from datetime import timedelta

import pytest
from django.utils import timezone

from customers import events
from customers.activity import LAST_ACTIVITY_STEP
from customers.models import Customer, OutboxEvent
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


def track(api, customer, at):
    response = api.post(
        f"/api/v1/customers/{customer.pk}/activities", {"type": "login", "occurred_at": at.isoformat()}, format="json"
    )
    assert response.status_code == 201, response.content
    return response


def metrics_events(customer):
    return list(
        OutboxEvent.objects.filter(event_type=events.CUSTOMER_METRICS_UPDATED, subject=str(customer.pk)).order_by(
            "occurred_at", "sequence"
        )
    )


def test_moving_last_activity_bumps_the_version_and_records_the_change(api):
    customer = CustomerFactory()
    version = Customer.objects.get(pk=customer.pk).version
    at = NOW - timedelta(minutes=10)
    track(api, customer, at)
    after = Customer.objects.get(pk=customer.pk)
    assert (after.last_activity_at, after.version) == (at, version + 1)
    [event] = metrics_events(customer)
    assert event.data["changed_fields"] == ["last_activity_at"]
    assert event.data["version"] == version + 1
    assert event.data["last_activity_at"] == at.isoformat()
    assert api.get(f"/api/v1/customers/{customer.pk}").json()["version"] == version + 1


def test_activity_within_a_step_of_the_last_one_changes_nothing(api):
    customer = CustomerFactory()
    first = NOW - timedelta(minutes=10)
    track(api, customer, first)
    version = Customer.objects.get(pk=customer.pk).version
    track(api, customer, first + LAST_ACTIVITY_STEP - timedelta(seconds=1))  # a page view moments later
    track(api, customer, first - timedelta(hours=1))  # older: never moves it back
    after = Customer.objects.get(pk=customer.pk)
    assert (after.last_activity_at, after.version) == (first, version)
    assert len(metrics_events(customer)) == 1
    track(api, customer, first + LAST_ACTIVITY_STEP)
    assert Customer.objects.get(pk=customer.pk).last_activity_at == first + LAST_ACTIVITY_STEP
    assert len(metrics_events(customer)) == 2


def test_a_restricted_customers_event_carries_identifiers_only(api):
    customer = CustomerFactory()
    Customer.objects.filter(pk=customer.pk).update(processing_restricted=True)
    track(api, customer, NOW - timedelta(minutes=5))
    [event] = metrics_events(customer)
    assert event.data == {"customer_id": str(customer.pk)}
