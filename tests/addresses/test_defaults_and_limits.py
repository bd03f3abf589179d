"""The address book's rules, through the services: defaults, limit, soft delete, rollback, DB guarantees."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from addresses import selectors, services
from addresses.errors import AddressLimitExceeded, AddressNotFound
from addresses.models import MAX_ACTIVE_ADDRESSES, Address
from customers import events
from customers.actor import Actor
from customers.errors import Conflict, CustomerNotFound, ValidationFailed
from customers.models import Customer, OutboxEvent
from tests.addresses.factories import address_data, make_address

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


def defaults(customer) -> dict:
    return {
        kind: list(
            selectors.addresses_of(customer.pk).filter(**{f"is_default_{kind}": True}).values_list("id", flat=True)
        )
        for kind in ("shipping", "billing")
    }


def fresh(address) -> Address:
    return Address.objects.get(pk=address.pk)


class TestFirstAddressAndSetDefault:
    def test_the_first_address_of_a_type_becomes_its_default(self, customer):
        home = make_address(customer, type="shipping")
        office = make_address(customer, type="shipping", label="Office")
        invoice = make_address(customer, type="billing", label="Invoices")
        assert defaults(customer) == {"shipping": [home.pk], "billing": [invoice.pk]}
        assert not fresh(office).is_default

    def test_a_both_address_counts_for_shipping_and_billing(self, customer):
        both = make_address(customer, type="both")
        assert defaults(customer) == {"shipping": [both.pk], "billing": [both.pk]}
        make_address(customer, type="billing")  # billing already has a default: the both address
        assert defaults(customer) == {"shipping": [both.pk], "billing": [both.pk]}

    def test_create_with_make_default_takes_over(self, customer):
        old = make_address(customer, type="both")
        new = make_address(customer, type="shipping", make_default=True)
        assert defaults(customer) == {"shipping": [new.pk], "billing": [old.pk]}

    def test_set_default_unsets_the_old_one(self, customer):
        home = make_address(customer)
        office = make_address(customer, label="Office")
        services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=office.pk)
        assert defaults(customer)["shipping"] == [office.pk]
        assert not fresh(home).is_default_shipping

    def test_set_default_of_a_both_address_for_one_type(self, customer):
        shipping = make_address(customer, type="shipping")
        billing = make_address(customer, type="billing")
        both = make_address(customer, type="both")
        services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=both.pk, kind="billing")
        assert defaults(customer) == {"shipping": [shipping.pk], "billing": [both.pk]}
        services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=both.pk)
        assert defaults(customer) == {"shipping": [both.pk], "billing": [both.pk]}
        assert not fresh(billing).is_default

    def test_one_old_address_losing_both_defaults_is_saved_once(self, customer):
        old = make_address(customer, type="both")
        new = make_address(customer, type="both", label="New")
        before = old.history.count()
        services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=new.pk)
        assert defaults(customer) == {"shipping": [new.pk], "billing": [new.pk]}
        assert old.history.count() == before + 1

    @pytest.mark.parametrize(
        ("address_type", "kind"), [("shipping", "billing"), ("billing", "shipping"), ("shipping", "both")]
    )
    def test_set_default_refuses_a_type_the_address_does_not_serve(self, customer, address_type, kind):
        address = make_address(customer, type=address_type)
        with pytest.raises(ValidationFailed) as caught:
            services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=address.pk, kind=kind)
        assert "type" in caught.value.errors

    def test_set_default_on_the_default_changes_nothing(self, customer):
        home = make_address(customer)
        count = OutboxEvent.objects.count()
        services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=home.pk)
        assert OutboxEvent.objects.count() == count


class TestDeleteTheDefault:
    def test_the_most_recently_used_remaining_address_takes_over(self, customer):
        now = timezone.now()
        default = make_address(customer, label="Default")
        used_long_ago = make_address(customer, label="Long ago")
        used_recently = make_address(customer, label="Recently")
        never_used_newest = make_address(customer, label="Never used")
        make_address(customer, type="billing", label="Billing only")
        for address, when in [(used_long_ago, now - timedelta(days=300)), (used_recently, now - timedelta(days=2))]:
            services.address_mark_used(actor=ACTOR, customer_id=customer.pk, address_id=address.pk, used_at=when)

        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=default.pk)
        assert defaults(customer)["shipping"] == [used_recently.pk]
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=used_recently.pk)
        assert defaults(customer)["shipping"] == [used_long_ago.pk]
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=used_long_ago.pk)
        assert defaults(customer)["shipping"] == [never_used_newest.pk]

    def test_without_usage_the_newest_takes_over(self, customer):
        default = make_address(customer)
        older = make_address(customer, label="Older")
        newer = make_address(customer, label="Newer")
        Address.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=1))
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=default.pk)
        assert defaults(customer)["shipping"] == [newer.pk]

    def test_deleting_a_both_default_elects_per_type(self, customer):
        both = make_address(customer, type="both")
        shipping = make_address(customer, type="shipping")
        billing = make_address(customer, type="billing")
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=both.pk)
        assert defaults(customer) == {"shipping": [shipping.pk], "billing": [billing.pk]}

    def test_a_both_address_can_take_over_a_single_type(self, customer):
        billing = make_address(customer, type="billing")
        both = make_address(customer, type="both")  # becomes the shipping default only
        assert defaults(customer) == {"shipping": [both.pk], "billing": [billing.pk]}
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=billing.pk)
        assert defaults(customer) == {"shipping": [both.pk], "billing": [both.pk]}

    def test_deleting_the_last_address_of_a_type_leaves_no_default(self, customer):
        only = make_address(customer)
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=only.pk)
        assert defaults(customer) == {"shipping": [], "billing": []}
        event = OutboxEvent.objects.filter(event_type="customer.default_address.changed.v1").latest("occurred_at")
        assert event.data["old_address_id"] == str(only.pk) and event.data["new_address_id"] is None

    def test_if_anything_fails_nothing_changes(self, customer, monkeypatch):
        default = make_address(customer)
        other = make_address(customer, label="Other")
        real_record = events.record

        def failing_record(*, event_type, **kwargs):
            if event_type == "customer.default_address.changed.v1":
                raise RuntimeError("broker schema check failed")
            return real_record(event_type=event_type, **kwargs)

        monkeypatch.setattr(events, "record", failing_record)
        events_before = OutboxEvent.objects.count()
        with pytest.raises(RuntimeError):
            services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=default.pk)
        default, other = fresh(default), fresh(other)
        assert default.deleted_at is None and default.is_default_shipping
        assert not other.is_default_shipping
        assert OutboxEvent.objects.count() == events_before


class TestTypeChanges:
    def test_retyping_the_default_away_elects_another(self, customer):
        both = make_address(customer, type="both")
        billing = make_address(customer, type="billing")
        services.address_update(actor=ACTOR, customer_id=customer.pk, address_id=both.pk, changes={"type": "shipping"})
        assert defaults(customer) == {"shipping": [both.pk], "billing": [billing.pk]}

    def test_retyping_into_a_type_without_default_takes_it(self, customer):
        shipping = make_address(customer, type="shipping")
        services.address_update(actor=ACTOR, customer_id=customer.pk, address_id=shipping.pk, changes={"type": "both"})
        assert defaults(customer) == {"shipping": [shipping.pk], "billing": [shipping.pk]}

    def test_retyping_the_only_shipping_default_to_billing(self, customer):
        only = make_address(customer, type="shipping")
        services.address_update(actor=ACTOR, customer_id=customer.pk, address_id=only.pk, changes={"type": "billing"})
        assert defaults(customer) == {"shipping": [], "billing": [only.pk]}


class TestUpdate:
    def test_the_whole_address_is_validated_again(self, customer):
        address = make_address(customer, country="DE")
        with pytest.raises(ValidationFailed) as caught:
            services.address_update(
                actor=ACTOR, customer_id=customer.pk, address_id=address.pk, changes={"country": "US"}
            )
        assert "state" in caught.value.errors  # a US address needs a state the German one never had
        updated = services.address_update(
            actor=ACTOR,
            customer_id=customer.pk,
            address_id=address.pk,
            changes={"country": "us", "state": "New York", "city": "New York", "postal_code": "10001"},
        )
        assert (updated.country, updated.state) == ("US", "NY")

    def test_no_change_writes_nothing(self, customer):
        address = make_address(customer)
        count, history = OutboxEvent.objects.count(), address.history.count()
        services.address_update(
            actor=ACTOR, customer_id=customer.pk, address_id=address.pk, changes={"city": " Berlin "}
        )
        assert OutboxEvent.objects.count() == count and address.history.count() == history


class TestLimitAndSoftDelete:
    def test_the_eleventh_address_is_refused(self, customer):
        for number in range(MAX_ACTIVE_ADDRESSES):
            make_address(customer, label=f"#{number}")
        with pytest.raises(AddressLimitExceeded) as caught:
            make_address(customer, label="one too many")
        assert caught.value.code == "ADDRESS_LIMIT_EXCEEDED" and caught.value.kind == "invalid"
        assert selectors.addresses_of(customer.pk).count() == MAX_ACTIVE_ADDRESSES

    def test_deleted_addresses_do_not_count(self, customer):
        first = make_address(customer)
        for number in range(MAX_ACTIVE_ADDRESSES - 1):
            make_address(customer, label=f"#{number}")
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=first.pk)
        make_address(customer, label="replacement")
        assert selectors.addresses_of(customer.pk).count() == MAX_ACTIVE_ADDRESSES
        assert Address.objects.filter(customer=customer).count() == MAX_ACTIVE_ADDRESSES + 1

    def test_a_deleted_address_is_kept_but_gone_from_everything(self, customer):
        address = make_address(customer)
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=address.pk)
        kept = fresh(address)
        assert kept.deleted_at is not None and not kept.is_default and kept.line1 == "Unter den Linden 77"
        assert not selectors.addresses_of(customer.pk).exists()
        for call in [
            lambda: services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=address.pk),
            lambda: services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=address.pk),
            lambda: services.address_update(
                actor=ACTOR, customer_id=customer.pk, address_id=address.pk, changes={"label": "x"}
            ),
        ]:
            with pytest.raises(AddressNotFound):
                call()

    def test_another_customers_address_is_not_found(self, customer, other_customer):
        theirs = make_address(other_customer)
        with pytest.raises(AddressNotFound):
            services.address_set_default(actor=ACTOR, customer_id=customer.pk, address_id=theirs.pk)
        with pytest.raises(AddressNotFound):
            selectors.address_get(customer_id=customer.pk, address_id="not-a-uuid")

    def test_a_token_limited_to_another_customer_gets_customer_not_found(self, customer, other_customer):
        theirs = make_address(other_customer)
        token = Actor(kind="token", subject="app", scopes=frozenset({"customers:write"}), customer_id=customer.pk)
        with pytest.raises(CustomerNotFound):
            services.address_delete(actor=token, customer_id=other_customer.pk, address_id=theirs.pk)
        with pytest.raises(CustomerNotFound):
            services.address_create(actor=token, customer_id=other_customer.pk, **address_data())

    def test_an_erased_customers_book_is_closed(self, customer):
        Customer.objects.filter(pk=customer.pk).update(status="erased")
        with pytest.raises(Conflict) as caught:
            make_address(customer)
        assert caught.value.code == "CUSTOMER_ERASED"


class TestDatabaseGuarantees:
    """The rules hold even for writes that bypass the services."""

    def test_two_defaults_of_a_type_are_refused_by_the_index(self, customer):
        make_address(customer, type="both")
        second = make_address(customer, type="shipping", label="Second")
        second.is_default_shipping = True
        with pytest.raises(IntegrityError, match="address_one_default_shipping"), transaction.atomic():
            second.save()

    def test_a_shipping_address_cannot_be_the_billing_default(self, customer):
        address = make_address(customer, type="shipping")
        with pytest.raises(IntegrityError, match="address_default_billing_matches_type"), transaction.atomic():
            Address.objects.filter(pk=address.pk).update(is_default_billing=True)

    def test_deleted_rows_do_not_hold_a_default(self, customer):
        address = make_address(customer)
        with pytest.raises(IntegrityError, match="address_deleted_not_default"), transaction.atomic():
            Address.objects.filter(pk=address.pk).update(deleted_at=timezone.now())

    def test_a_deleted_default_does_not_block_a_new_one(self, customer):
        old = make_address(customer)
        Address.objects.filter(pk=old.pk).update(deleted_at=timezone.now(), is_default_shipping=False)
        new = make_address(customer, label="New")
        assert fresh(new).is_default_shipping

    @pytest.mark.parametrize(
        ("changes", "constraint"),
        [
            ({"latitude": 91, "longitude": 0}, "address_latitude_range"),
            ({"latitude": 0, "longitude": 181}, "address_longitude_range"),
            ({"latitude": 1, "longitude": None}, "address_coordinates_both_or_neither"),
            ({"type": "home", "is_default_shipping": False, "is_default_billing": False}, "address_type_valid"),
            ({"country": "de"}, "address_country_alpha2"),
        ],
    )
    def test_checks(self, customer, changes, constraint):
        address = make_address(customer, type="both")
        with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
            Address.objects.filter(pk=address.pk).update(**changes)


class TestMarkUsedAndErase:
    def test_mark_used_only_moves_forward(self, customer):
        address = make_address(customer)
        now = timezone.now()
        services.address_mark_used(actor=ACTOR, customer_id=customer.pk, address_id=address.pk, used_at=now)
        services.address_mark_used(
            actor=ACTOR, customer_id=customer.pk, address_id=address.pk, used_at=now - timedelta(days=1)
        )
        assert fresh(address).last_used_at == now

    def test_erasure_removes_every_address_and_its_history(self, customer, other_customer):
        kept = make_address(other_customer)
        active = make_address(customer)
        deleted = make_address(customer, label="Old")
        services.address_delete(actor=ACTOR, customer_id=customer.pk, address_id=deleted.pk)
        assert services.addresses_erase(actor=ACTOR, customer_id=customer.pk) == 2
        assert not Address.objects.filter(customer=customer).exists()
        assert not Address.history.filter(id__in=[active.pk, deleted.pk]).exists()
        assert fresh(kept) and kept.history.exists()
