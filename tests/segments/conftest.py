"""Helpers for the segments tests: customers with metrics, segments through the services, membership sets."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from consent import services as consent_services
from customers.actor import Actor
from customers.models import Customer, CustomerOrder, OutboxEvent
from segments import selectors, services
from segments.models import SegmentCalculation, SegmentMembership
from tests.factories import CustomerFactory

SYSTEM = Actor.system("tests")
_numbers = itertools.count(1)


def make_customer(*, metrics: dict | None = None, **profile) -> Customer:
    """A customer created through the services; `metrics` are then set as event ingestion would."""
    customer = CustomerFactory(**profile)
    if metrics:
        set_metrics(customer, **metrics)
    return customer


def set_metrics(customer: Customer, **values) -> Customer:
    Customer.objects.filter(pk=customer.pk).update(**values)
    customer.refresh_from_db()
    return customer


def add_orders(customer: Customer, count: int, *, days_ago: float = 1, status: str = "completed", total="50.00"):
    placed = timezone.now() - timedelta(days=days_ago)
    for _ in range(count):
        CustomerOrder.objects.create(
            order_id=f"o-{next(_numbers)}",
            customer=customer,
            total=Decimal(total),
            currency="USD",
            status=status,
            placed_at=placed,
            status_changed_at=placed,
        )


def grant(customer: Customer, purpose: str = "marketing_email") -> None:
    consent_services.consent_change(
        actor=SYSTEM, customer_id=customer.pk, purpose_code=purpose, status="granted", source="web"
    )


def revoke(customer: Customer, purpose: str = "marketing_email") -> None:
    consent_services.consent_change(
        actor=SYSTEM, customer_id=customer.pk, purpose_code=purpose, status="revoked", source="web"
    )


def matching(rules, **kwargs) -> set:
    """Ids of the customers the rules select now (the compiled query, no membership involved)."""
    return set(selectors.matching_customers(rules, **kwargs).values_list("id", flat=True))


def make_segment(rules=None, *, code=None, kind=None, actor=SYSTEM, **fields):
    number = next(_numbers)
    return services.segment_create(
        actor=actor,
        code=code or f"seg_{number}",
        name=fields.pop("name", None) or f"Segment {number}",
        kind=kind or ("dynamic" if rules is not None else "static"),
        rules=rules,
        **fields,
    )


def recalculate(segment) -> SegmentCalculation:
    """Run a full recalculation now, as the worker would."""
    job = services.segment_request_calculation(actor=SYSTEM, segment_id=segment.pk, run=False)
    done = services.segment_calculation_run(job_id=job.pk, actor=SYSTEM)
    segment.refresh_from_db()
    return done


def members(segment) -> set:
    return set(
        SegmentMembership.objects.filter(segment=segment, left_at__isnull=True).values_list("customer_id", flat=True)
    )


def events_of(event_type: str, **data) -> list[OutboxEvent]:
    found = OutboxEvent.objects.filter(event_type=event_type).order_by("occurred_at")
    return [event for event in found if all(event.data.get(key) == value for key, value in data.items())]


def at_once(count: int, work) -> list:
    """Run `work()` in `count` threads released together (each on its own database connection);
    returns what each returned. Any exception in a thread fails the caller."""
    barrier, results, failures = threading.Barrier(count), [], []

    def run():
        try:
            barrier.wait()
            results.append(work())
        except Exception as error:  # pragma: no cover - raised below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    return results


@pytest.fixture
def staff(db):
    """`staff(group_name, username=None)` → a staff user in that group."""

    def make(group: str, username: str | None = None):
        user = get_user_model().objects.create_user(
            username=username or group.lower().replace(" ", "_"), password="pw-123456-long", is_staff=True
        )
        user.groups.add(Group.objects.get(name=group))
        return user

    return make
