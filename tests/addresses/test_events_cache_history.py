"""Outbox events written with each change, the customer cache dropped on commit, history with the actor."""

import pytest
from django.core.cache import cache

from addresses import events as address_events
from addresses.models import Address
from customers import cache as customer_cache
from customers.models import OutboxEvent
from tests.addresses.factories import address_data, make_address

pytestmark = pytest.mark.django_db


def book(customer) -> str:
    return f"/api/v1/customers/{customer.pk}/addresses"


def recorded(customer) -> list[tuple[str, dict]]:
    return [
        (event.event_type, event.data)
        for event in OutboxEvent.objects.filter(subject=str(customer.pk), event_type__contains="address").order_by(
            "occurred_at"
        )
    ]


class TestEvents:
    def test_each_change_records_its_event_with_the_change(self, api, customer):
        first = api.post(book(customer), address_data("DE", type="both"), format="json").json()
        second = api.post(book(customer), address_data("FR", type="shipping"), format="json").json()
        api.patch(f"{book(customer)}/{second['id']}", {"label": "Paris"}, format="json")
        api.post(f"{book(customer)}/{second['id']}/set-default")
        api.delete(f"{book(customer)}/{first['id']}")

        def default_changed(kind, old, new):
            data = {"customer_id": str(customer.pk), "type": kind, "old_address_id": old, "new_address_id": new}
            return ("customer.default_address.changed.v1", data)

        assert recorded(customer) == [
            (
                "customer.address.added.v1",
                {
                    "customer_id": str(customer.pk),
                    "address_id": first["id"],
                    "type": "both",
                    "country": "DE",
                    "is_default_shipping": True,
                    "is_default_billing": True,
                },
            ),
            default_changed("shipping", None, first["id"]),
            default_changed("billing", None, first["id"]),
            (
                "customer.address.added.v1",
                {
                    "customer_id": str(customer.pk),
                    "address_id": second["id"],
                    "type": "shipping",
                    "country": "FR",
                    "is_default_shipping": False,
                    "is_default_billing": False,
                },
            ),
            (
                "customer.address.updated.v1",
                {
                    "customer_id": str(customer.pk),
                    "address_id": second["id"],
                    "type": "shipping",
                    "country": "FR",
                    "is_default_shipping": False,
                    "is_default_billing": False,
                    "changed_fields": ["label"],
                },
            ),
            default_changed("shipping", first["id"], second["id"]),
            (
                "customer.address.removed.v1",
                {
                    "customer_id": str(customer.pk),
                    "address_id": first["id"],
                    "type": "both",
                    "country": "DE",
                    "is_default_shipping": False,
                    "is_default_billing": False,
                    "was_default_for": ["billing"],
                },
            ),
            default_changed("billing", first["id"], None),
        ]

    def test_events_carry_the_actor_and_no_personal_data(self, api_client, customer):
        api_client(subject="storefront").post(book(customer), address_data("DE", phone="+49 30 1234567"), format="json")
        event = OutboxEvent.objects.get(event_type=address_events.ADDRESS_ADDED)
        assert event.metadata["actor"] == "token:storefront" and event.metadata["correlation_id"]
        text = str(event.data)
        for personal in ["Linden", "Berlin", "10117", "Ann", "Lee", "+4930"]:
            assert personal not in text

    def test_a_refused_change_records_nothing(self, api, customer):
        api.post(book(customer), address_data("DE", postal_code="x"), format="json")
        address = make_address(customer)
        count = OutboxEvent.objects.count()
        api.patch(f"{book(customer)}/{address.pk}", {"postal_code": "x"}, format="json")
        assert OutboxEvent.objects.count() == count
        assert recorded(customer)[0][0] == "customer.address.added.v1"


class TestCache:
    def customer_cached(self, customer):
        return cache.get(customer_cache.customer_key(customer.pk)) is not None

    # Each change is made so that it shows in GET /customers/{id}: (change, what the default shipping
    # address must look like afterwards, given the default `d` and the other address `o`).
    CHANGES = {
        "create": (
            lambda api, c, d, o: api.post(book(c), address_data("GB", label="New", is_default=True), format="json"),
            lambda shown, d, o: shown["label"] == "New" and shown["country"] == "GB",
        ),
        "patch": (
            lambda api, c, d, o: api.patch(f"{book(c)}/{d.pk}", {"label": "Work"}, format="json"),
            lambda shown, d, o: shown["id"] == str(d.pk) and shown["label"] == "Work",
        ),
        "put": (
            lambda api, c, d, o: api.put(f"{book(c)}/{d.pk}", address_data("FR", label="Paris"), format="json"),
            lambda shown, d, o: shown["id"] == str(d.pk) and shown["country"] == "FR",
        ),
        "set-default": (
            lambda api, c, d, o: api.post(f"{book(c)}/{o.pk}/set-default"),
            lambda shown, d, o: shown["id"] == str(o.pk),
        ),
        "delete": (
            lambda api, c, d, o: api.delete(f"{book(c)}/{d.pk}"),
            lambda shown, d, o: shown["id"] == str(o.pk),  # the other one took over
        ),
    }

    @pytest.mark.parametrize("name", list(CHANGES))
    def test_every_address_change_drops_the_cached_customer(
        self, api, customer, name, django_capture_on_commit_callbacks
    ):
        change, expected = self.CHANGES[name]
        default = make_address(customer, label="Default")
        other = make_address(customer, label="Other")
        before = api.get(f"/api/v1/customers/{customer.pk}").json()
        assert before["default_shipping_address"]["id"] == str(default.pk)
        assert self.customer_cached(customer)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert change(api, customer, default, other).status_code in (200, 201, 204)
        assert callbacks, "the change must drop the cache entry on commit"
        assert not self.customer_cached(customer)
        after = api.get(f"/api/v1/customers/{customer.pk}").json()
        assert self.customer_cached(customer)
        # Served from a stale entry, the read would still show `before`: the change must be visible.
        assert after["default_shipping_address"] != before["default_shipping_address"]
        assert expected(after["default_shipping_address"], default, other), after["default_shipping_address"]

    def test_the_new_default_shows_on_the_next_read(self, api, customer, django_capture_on_commit_callbacks):
        make_address(customer, label="Default")
        other = make_address(customer, label="Other")
        assert api.get(f"/api/v1/customers/{customer.pk}").json()["default_shipping_address"]["label"] == "Default"
        with django_capture_on_commit_callbacks(execute=True):
            api.post(f"{book(customer)}/{other.pk}/set-default")
        assert api.get(f"/api/v1/customers/{customer.pk}").json()["default_shipping_address"]["label"] == "Other"

    def test_a_refused_change_keeps_the_entry(self, api, customer, django_capture_on_commit_callbacks):
        address = make_address(customer)
        api.get(f"/api/v1/customers/{customer.pk}")
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = api.patch(f"{book(customer)}/{address.pk}", {"postal_code": "x"}, format="json")
        assert response.status_code == 400 and not callbacks
        assert self.customer_cached(customer)


class TestHistory:
    def test_every_change_is_in_the_history_with_the_acting_token(self, api_client, customer):
        client = api_client(subject="checkout")
        created = client.post(book(customer), address_data("DE"), format="json").json()
        client.patch(f"{book(customer)}/{created['id']}", {"label": "Work"}, format="json")
        client.delete(f"{book(customer)}/{created['id']}")
        rows = list(Address.history.filter(id=created["id"]).order_by("history_date", "history_id"))
        assert [(row.history_type, row.history_change_reason) for row in rows] == [
            ("+", "created"),
            ("~", "updated: label"),
            ("~", "deleted"),
        ]
        assert {row.history_actor for row in rows} == {"token:checkout"}
        assert all(row.history_user is None for row in rows)
        assert rows[1].label == "Work" and rows[2].deleted_at is not None

    def test_the_old_default_losing_its_flag_is_in_its_history(self, api, customer):
        old = make_address(customer)
        new = make_address(customer, label="New")
        api.post(f"{book(customer)}/{new.pk}/set-default")
        last = Address.history.filter(id=old.pk).latest("history_date")
        assert last.is_default_shipping is False and "no longer the default shipping" in last.history_change_reason
