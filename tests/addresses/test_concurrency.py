"""Concurrent writes for one customer, each in its own thread and database connection.

These tests commit for real (transaction=True); serialized_rollback gives each one the data the
migrations wrote, and `migrated_data_restored` leaves it behind the module for the tests that follow.
"""

import itertools
import threading
import time

import pytest
from django.db import connection, transaction

from addresses import selectors, services
from addresses.errors import AddressLimitExceeded
from addresses.models import MAX_ACTIVE_ADDRESSES
from customers.actor import Actor
from customers.models import OutboxEvent
from tests.addresses.factories import address_data, make_address
from tests.factories import CustomerFactory

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]
ACTOR = Actor.system("tests")


def run_together(calls):
    """Start every call at the same moment in its own thread; return (results, errors)."""
    barrier = threading.Barrier(len(calls))
    results, errors = [], []

    def worker(call):
        try:
            barrier.wait(timeout=10)
            results.append(call())
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, errors


def shipping_defaults(customer):
    return list(selectors.addresses_of(customer.pk).filter(is_default_shipping=True).values_list("id", flat=True))


def test_concurrent_set_default_calls_end_with_exactly_one_default():
    customer = CustomerFactory(email="race@example.com")
    addresses = [make_address(customer, label=f"#{n}") for n in range(8)]

    for _round in range(3):
        _, errors = run_together(
            [
                lambda address=address: services.address_set_default(
                    actor=ACTOR, customer_id=customer.pk, address_id=address.pk
                )
                for address in addresses
            ]
        )
        assert errors == []
        assert len(shipping_defaults(customer)) == 1

    # Each change names as "old" the default the previous one set: none was lost in the race.
    changes = OutboxEvent.objects.filter(
        subject=str(customer.pk), event_type="customer.default_address.changed.v1"
    ).order_by("occurred_at")
    chain = [(event.data["old_address_id"], event.data["new_address_id"]) for event in changes]
    for (_, previous_new), (old, _) in itertools.pairwise(chain):
        assert old == previous_new
    assert chain[-1][1] == str(shipping_defaults(customer)[0])


def test_a_second_set_default_waits_for_the_first_to_commit():
    customer = CustomerFactory(email="wait@example.com")
    first, second, third = (make_address(customer, label=f"#{n}") for n in range(3))
    first_holds_lock = threading.Event()
    timeline = {}

    def slow_first():
        with transaction.atomic():
            services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=second.pk)
            first_holds_lock.set()
            time.sleep(0.5)
            timeline["first_committing"] = time.monotonic()

    def then_second():
        assert first_holds_lock.wait(timeout=10)
        services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=third.pk)
        timeline["second_done"] = time.monotonic()

    _, errors = run_together([slow_first, then_second])
    assert errors == []
    assert timeline["second_done"] >= timeline["first_committing"]
    assert shipping_defaults(customer) == [third.pk]
    last = OutboxEvent.objects.filter(event_type="customer.default_address.changed.v1").latest("occurred_at")
    assert (last.data["old_address_id"], last.data["new_address_id"]) == (str(second.pk), str(third.pk))
    assert first.pk not in shipping_defaults(customer)


def test_concurrent_first_addresses_give_one_default():
    customer = CustomerFactory(email="first@example.com")
    results, errors = run_together(
        [
            lambda n=n: services.address_create(actor=ACTOR, customer_id=customer.pk, **address_data(label=f"#{n}"))
            for n in range(5)
        ]
    )
    assert errors == [] and len(results) == 5
    assert len(shipping_defaults(customer)) == 1


def test_concurrent_creates_never_pass_the_limit():
    customer = CustomerFactory(email="limit@example.com")
    for n in range(MAX_ACTIVE_ADDRESSES - 2):
        make_address(customer, label=f"#{n}")
    results, errors = run_together(
        [
            lambda n=n: services.address_create(actor=ACTOR, customer_id=customer.pk, **address_data(label=f"new {n}"))
            for n in range(5)
        ]
    )
    assert len(results) == 2
    assert len(errors) == 3 and all(isinstance(error, AddressLimitExceeded) for error in errors)
    assert selectors.addresses_of(customer.pk).count() == MAX_ACTIVE_ADDRESSES


def test_deleting_the_default_while_another_becomes_default():
    customer = CustomerFactory(email="mixed@example.com")
    default, other, third = (make_address(customer, label=f"#{n}") for n in range(3))
    _, errors = run_together(
        [
            lambda: services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=default.pk),
            lambda: services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=other.pk),
            lambda: services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=third.pk),
        ]
    )
    assert errors == []
    assert len(shipping_defaults(customer)) == 1
