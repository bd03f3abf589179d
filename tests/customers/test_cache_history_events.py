import uuid

import pytest
from django.core.cache import cache
from django.db import transaction

from customers import cache as customer_cache
from customers import services
from customers.actor import Actor
from customers.errors import EmailAlreadyExists
from customers.models import Customer, CustomerPreferences, OutboxEvent
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/customers"


def cached(customer):
    return cache.get(customer_cache.customer_key(customer.pk))


def counter(result):
    return customer_cache.customer_cache_requests.labels(result=result)._value.get()


class TestCache:
    def test_get_is_served_from_redis_and_counted(self, api):
        customer = CustomerFactory(email="a@example.com")
        misses, hits = counter("miss"), counter("hit")
        first = api.get(f"{URL}/{customer.pk}")
        assert cached(customer) is not None
        # Change the row behind the cache's back: a hit must serve the cached bytes.
        Customer.objects.filter(pk=customer.pk).update(first_name="Sneaky")
        second = api.get(f"{URL}/{customer.pk}")
        assert second.json() == first.json()
        assert counter("miss") == misses + 1 and counter("hit") == hits + 1
        assert cache.ttl(customer_cache.customer_key(customer.pk)) <= 300

    @pytest.mark.parametrize(
        "change",
        [
            lambda api, c: api.patch(f"{URL}/{c.pk}", {"first_name": "Changed"}, format="json"),
            lambda api, c: api.put(f"{URL}/{c.pk}", {"email": "new@example.com"}, format="json"),
            lambda api, c: api.patch(f"{URL}/{c.pk}/preferences", {"theme": "dark"}, format="json"),
            lambda api, c: api.post(f"{URL}/{c.pk}/status", {"status": "inactive", "reason": "x"}, format="json"),
            lambda api, c: api.delete(f"{URL}/{c.pk}"),
        ],
        ids=["patch", "put", "preferences", "status", "delete"],
    )
    def test_every_change_is_visible_on_the_next_read(self, api, change, django_capture_on_commit_callbacks):
        customer = CustomerFactory(email="a@example.com")
        before = api.get(f"{URL}/{customer.pk}").json()
        assert cached(customer) is not None
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert change(api, customer).status_code in (200, 204)
        assert callbacks, "the change must drop the cache entry on commit"
        assert cached(customer) is None
        after = api.get(f"{URL}/{customer.pk}").json()
        assert after["version"] == before["version"] + 1
        assert after != before

    def test_a_rolled_back_change_keeps_the_entry(self, api, django_capture_on_commit_callbacks):
        customer = CustomerFactory(email="a@example.com")
        CustomerFactory(email="b@example.com")
        api.get(f"{URL}/{customer.pk}")
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert api.patch(f"{URL}/{customer.pk}", {"email": "b@example.com"}, format="json").status_code == 409
        assert callbacks == []
        assert cached(customer) is not None

    def test_a_reader_that_read_the_old_row_cannot_store_it_over_a_change(self, api):
        """Reader misses and reads the old row; a write commits and invalidates; the reader stores late."""
        customer = CustomerFactory(email="a@example.com", first_name="Old")
        stale_body, generation = customer_cache.get_customer_representation(customer.pk)
        assert stale_body is None
        stale_body = api.get(f"{URL}/{customer.pk}").content  # what the slow reader built from the old row
        cache.delete(customer_cache.customer_key(customer.pk))
        services.customer_update(actor=Actor.system("tests"), customer_id=customer.pk, changes={"first_name": "New"})
        customer_cache.invalidate_customers_now([customer.pk])  # the write's on-commit invalidation
        customer_cache.put_customer_representation(customer.pk, stale_body, generation)  # the late store
        assert api.get(f"{URL}/{customer.pk}").json()["first_name"] == "New"

    def test_a_batch_invalidation_drops_every_entry_and_changes_every_generation(self, monkeypatch):
        monkeypatch.setattr(customer_cache, "_INVALIDATION_CHUNK", 2)  # three chunks for five customers
        ids = [uuid.uuid4() for _ in range(5)]
        before = {}
        for customer_id in ids:
            _, before[customer_id] = customer_cache.get_customer_representation(customer_id)
            customer_cache.put_customer_representation(customer_id, b"{}", before[customer_id])
            assert customer_cache.get_customer_representation(customer_id)[0] == b"{}"
        untouched = uuid.uuid4()
        customer_cache.put_customer_representation(untouched, b"{}", None)
        customer_cache.invalidate_customers_now(ids)
        for customer_id in ids:
            body, generation = customer_cache.get_customer_representation(customer_id)
            assert body is None and generation is not None and generation != before[customer_id]
            assert cache.get(customer_cache.customer_key(customer_id)) is None
        assert customer_cache.get_customer_representation(untouched)[0] == b"{}"

    def test_an_invalidation_redis_refuses_is_counted_not_raised(self, monkeypatch, caplog):
        from django.core.cache import caches

        failures = customer_cache.customer_cache_invalidation_failures._value.get()
        monkeypatch.setattr(customer_cache, "cache", caches["unreachable"])
        customer_cache.invalidate_customers_now(["c1", "c2"])
        assert customer_cache.customer_cache_invalidation_failures._value.get() == failures + 2
        assert "customer cache invalidation failed for 2 customer(s)" in caplog.text


class TestEvents:
    def test_created_event_has_the_envelope(self, api):
        response = api.post(URL, {"email": "a@example.com"}, format="json", HTTP_X_CORRELATION_ID="req-42")
        event = OutboxEvent.objects.get(event_type="customer.created.v1")
        assert event.subject == response.json()["id"]
        assert event.source == "customer-service"
        assert event.metadata == {"correlation_id": "req-42", "actor": "token:tests"}
        assert event.data["email"] == "a@example.com" and event.published_at is None
        assert response["X-Correlation-ID"] == "req-42"

    def test_failed_write_leaves_no_event_and_no_row(self):
        actor = Actor.system("tests")
        CustomerFactory(email="a@example.com")
        before = OutboxEvent.objects.count()
        with pytest.raises(EmailAlreadyExists):
            services.customer_create(actor=actor, email="A@example.com")
        assert OutboxEvent.objects.count() == before

    def test_a_failure_after_the_event_was_recorded_rolls_both_back(self, monkeypatch):
        customer = CustomerFactory(email="a@example.com", phone="")
        before = OutboxEvent.objects.count()

        def fail(**kwargs):
            raise RuntimeError("duplicate detection crashed")

        # The event is recorded before duplicate detection runs, in the same transaction.
        monkeypatch.setattr(services, "duplicates_detect", fail)
        with pytest.raises(RuntimeError):
            services.customer_update(
                actor=Actor.system("tests"), customer_id=customer.pk, changes={"phone": "+14155552671"}
            )
        customer.refresh_from_db()
        assert customer.phone == "" and customer.version == 1
        assert OutboxEvent.objects.count() == before

    def test_event_rolls_back_with_an_outer_transaction(self):
        actor = Actor.system("tests")
        with pytest.raises(RuntimeError), transaction.atomic():
            services.customer_create(actor=actor, email="ghost@example.com")
            raise RuntimeError("something after the write failed")
        assert not Customer.objects.filter(email="ghost@example.com").exists()
        assert not OutboxEvent.objects.filter(data__email="ghost@example.com").exists()

    @pytest.mark.django_db(transaction=True, serialized_rollback=True)
    def test_record_refuses_to_run_outside_a_transaction(self):
        from customers import events

        with pytest.raises(RuntimeError):
            events.record(event_type="customer.updated.v1", subject="x", data={})


class TestHistory:
    def test_token_subject_is_recorded_on_history(self, api_client):
        api = api_client(subject="storefront")
        customer_id = api.post(URL, {"email": "a@example.com"}, format="json").json()["id"]
        api.patch(f"{URL}/{customer_id}", {"first_name": "Ann"}, format="json")
        api.patch(f"{URL}/{customer_id}/preferences", {"theme": "dark"}, format="json")
        rows = list(Customer.history.filter(id=customer_id).order_by("history_date"))
        assert [(r.history_type, r.history_actor, r.history_user_id) for r in rows] == [
            ("+", "token:storefront", None),
            ("~", "token:storefront", None),
            ("~", "token:storefront", None),
        ]
        assert rows[1].history_change_reason == "updated: first_name"
        assert rows[1].first_name == "Ann"
        # A preferences change bumps the customer's version, and its history row says so.
        assert rows[2].history_change_reason == "preferences updated: theme"
        assert [r.version for r in rows] == [1, 2, 3]
        prefs = list(CustomerPreferences.history.filter(customer_id=customer_id).order_by("history_date"))
        assert [p.history_actor for p in prefs] == ["token:storefront", "token:storefront"]
        assert prefs[-1].theme == "dark"

    def test_staff_user_is_recorded(self, django_user_model):
        user = django_user_model.objects.create_user("rep1", is_staff=True)
        customer = services.customer_create(actor=Actor.for_staff(user), email="a@example.com")
        row = Customer.history.get(id=customer.pk)
        assert row.history_user == user and row.history_actor == "staff:rep1"

    def test_history_managers_are_made_once_per_process(self):
        customer = services.customer_create(actor=Actor.system("tests"), email="a@example.com")
        again = Customer.objects.get(pk=customer.pk)
        assert type(customer.history) is type(again.history) is type(Customer.history)
        assert [row.history_type for row in again.history.all()] == ["+"]  # bound to its instance
        assert customer.preferences.history.get().history_actor == "system:tests"
