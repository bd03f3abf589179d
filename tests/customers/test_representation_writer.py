"""The fast representation writer writes exactly what DRF's serializers write."""

import json
from datetime import date
from decimal import Decimal

import pytest

from customers.actor import Actor
from customers.api import CustomerSerializer, customer_representations
from customers.merge import customer_merge
from customers.models import Customer, CustomerPreferences
from tests.addresses.factories import make_address
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


def _drf(customer) -> dict:
    return super(CustomerSerializer, CustomerSerializer()).to_representation(customer)


def test_every_kind_of_customer_reads_the_same_as_drf_writes_it():
    full = CustomerFactory(
        phone="+14155552671",
        date_of_birth=date(1990, 5, 17),
        tags=["vip", "newsletter"],
        metadata={"source": {"campaign": "spring", "n": [1, 2.5]}},
        custom_attributes={"shoe_size": 42},
        external_id="legacy-1",
        preferences={"language": "de-DE", "custom": {"seat": "aisle"}},
    )
    Customer.objects.filter(pk=full.pk).update(
        total_spent=Decimal("12345.60"), order_count=23, average_order_value=Decimal("536.76"), satisfaction_score=4.5
    )
    make_address(full, make_default=True)
    make_address(full, type="billing", make_default=True, country="GB")
    bare = CustomerFactory()
    without_preferences = CustomerFactory()
    CustomerPreferences.objects.filter(customer_id=without_preferences.pk).delete()
    survivor, merged = CustomerFactory(), CustomerFactory()
    customer_merge(actor=ACTOR, survivor_id=survivor.pk, merged_id=merged.pk)

    ids = [full.pk, bare.pk, without_preferences.pk, survivor.pk, merged.pk]
    customers = list(Customer.objects.select_related("preferences").filter(pk__in=ids).order_by("customer_number"))
    fast = customer_representations(customers)  # also sets the extensions' fields on the instances
    slow = [_drf(customer) for customer in customers]
    assert json.dumps(fast, default=str) == json.dumps(slow, default=str)  # keys in the same order too

    by_id = {item["id"]: item for item in fast}
    assert by_id[str(full.pk)]["default_billing_address"]["country"] == "GB"
    assert by_id[str(full.pk)]["tier"]["tier"] == "premium"
    assert by_id[str(full.pk)]["metrics"]["total_spent"] == "12345.60"
    assert by_id[str(without_preferences.pk)]["preferences"] is None
    assert by_id[str(merged.pk)]["merged_into"] == survivor.pk
    assert by_id[str(bare.pk)]["default_shipping_address"] is None
