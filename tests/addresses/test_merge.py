"""A customer merge moves the address book through addresses.services, with its events."""

import ast
import inspect

import pytest

from addresses import merge as address_merge
from addresses import services
from addresses.errors import AddressLimitExceeded
from addresses.models import MAX_ACTIVE_ADDRESSES, Address
from customers import services as customer_services
from customers.actor import Actor
from customers.models import OutboxEvent
from tests.addresses.factories import make_address
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tests")


def _events(customer, since: frozenset = frozenset()) -> list[tuple[str, dict]]:
    return [
        (event.event_type, event.data)
        for event in OutboxEvent.objects.filter(subject=str(customer.pk))
        .exclude(pk__in=since)
        .filter(
            event_type__in=[
                "customer.address.added.v1",
                "customer.address.removed.v1",
                "customer.default_address.changed.v1",
            ]
        )
        .order_by("occurred_at")
    ]


@pytest.fixture
def pair():
    survivor, merged = CustomerFactory(), CustomerFactory()
    home = make_address(survivor, label="Home")  # the survivor's default shipping
    paris = make_address(merged, label="Paris")  # merged's default shipping
    office = make_address(merged, label="Office", type="billing")  # merged's default billing
    return survivor, merged, home, paris, office


def _last_event_pk() -> frozenset:
    """The events recorded so far (to look only at what comes after)."""
    return frozenset(OutboxEvent.objects.values_list("pk", flat=True))


def test_a_merge_records_the_moves_and_the_default_changes_on_both_sides(pair):
    survivor, merged, home, paris, office = pair
    since = _last_event_pk()
    merge = customer_services.customer_merge(actor=SYSTEM, survivor_id=survivor.pk, merged_id=merged.pk)

    on_merged = _events(merged, since)
    removed = {data["address_id"] for kind, data in on_merged if kind == "customer.address.removed.v1"}
    assert removed == {str(paris.pk), str(office.pk)}
    assert all(data["moved_to_customer_id"] == str(survivor.pk) for kind, data in on_merged if "removed" in kind)
    lost = {(d["type"], d["old_address_id"], d["new_address_id"]) for k, d in on_merged if "default_address" in k}
    assert lost == {("shipping", str(paris.pk), None), ("billing", str(office.pk), None)}

    on_survivor = _events(survivor, since)
    added = {data["address_id"] for kind, data in on_survivor if kind == "customer.address.added.v1"}
    assert added == {str(paris.pk), str(office.pk)}
    gained = {(d["type"], d["old_address_id"], d["new_address_id"]) for k, d in on_survivor if "default_address" in k}
    assert gained == {("billing", None, str(office.pk))}  # shipping stays Home's
    home.refresh_from_db()
    assert home.is_default_shipping

    since = _last_event_pk()
    customer_services.customer_merge_undo(actor=SYSTEM, merge_id=merge.pk)
    back = {data["address_id"] for kind, data in _events(merged, since) if kind == "customer.address.added.v1"}
    assert back == {str(paris.pk), str(office.pk)}
    survivor_lost = {
        (d["type"], d["old_address_id"], d["new_address_id"]) for k, d in _events(survivor, since) if "default" in k
    }
    assert survivor_lost == {("billing", str(office.pk), None)}
    paris.refresh_from_db()
    office.refresh_from_db()
    assert (paris.customer_id, paris.is_default_shipping, office.is_default_billing) == (merged.pk, True, True)


def test_the_merge_uses_the_address_service_not_its_private_helpers():
    tree = ast.parse(inspect.getsource(address_merge))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not {name for name in names if name.startswith("_")}
    assert "addresses_move" in inspect.getsource(address_merge)


def test_the_move_refuses_to_exceed_the_limit():
    survivor, merged = CustomerFactory(), CustomerFactory()
    for number in range(MAX_ACTIVE_ADDRESSES):
        make_address(survivor, label=f"s{number}")
    make_address(merged, label="m")
    with pytest.raises(AddressLimitExceeded):
        services.addresses_move(actor=SYSTEM, from_customer_id=merged.pk, to_customer_id=survivor.pk, reason="t")
    assert Address.objects.filter(customer=merged).count() == 1


def test_the_limit_check_is_the_one_rule_the_admin_and_services_share(customer):
    for number in range(MAX_ACTIVE_ADDRESSES - 1):
        make_address(customer, label=f"#{number}")
    services.address_limit_check(customer_id=customer.pk)  # the 10th fits
    with pytest.raises(AddressLimitExceeded):
        services.address_limit_check(customer_id=customer.pk, adding=2)
    services.address_limit_check(customer_id=customer.pk, adding=2, removing=1)
    services.address_limit_check(customer_id=None, adding=MAX_ACTIVE_ADDRESSES)
    from addresses import admin as address_admin

    source = inspect.getsource(address_admin)
    assert "address_limit_check" in source
    assert "> MAX_ACTIVE_ADDRESSES" not in source and ">= MAX_ACTIVE_ADDRESSES" not in source
