"""The activity timeline: tracking API, timeline API, our events on it, admin page, pruning."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from customers import activity, services, tasks
from customers import cache as customer_cache
from customers.actor import SCOPE_READ, Actor
from customers.models import Customer, CustomerActivity, OutboxEvent
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/customers"
NOW = timezone.now().replace(microsecond=0)


def track(api, customer, **body):
    return api.post(f"{URL}/{customer.pk}/activities", {"type": "page_view", **body}, format="json")


def timeline(api, customer, **params):
    return api.get(f"{URL}/{customer.pk}/timeline", params)


def add(customer, type_="page_view", at=NOW, summary=""):
    return CustomerActivity.objects.create(
        customer=customer, type=type_, occurred_at=at, source="storefront", summary=summary
    )


@pytest.fixture
def customer():
    return CustomerFactory(email="shopper@example.com")


class TestTracking:
    def test_tracks_and_moves_last_activity(self, api, customer, django_capture_on_commit_callbacks):
        api.get(f"{URL}/{customer.pk}")
        at = NOW - timedelta(minutes=3)
        with django_capture_on_commit_callbacks(execute=True):
            response = track(api, customer, type="login", occurred_at=at.isoformat(), data={"device": "ios"})
        assert response.status_code == 201, response.content
        body = response.json()
        assert (body["type"], body["source"], body["data"]) == ("login", "storefront", {"device": "ios"})
        assert Customer.objects.get(pk=customer.pk).last_activity_at == at
        assert cache.get(customer_cache.customer_key(customer.pk)) is None
        track(api, customer, occurred_at=(at - timedelta(hours=1)).isoformat())  # older: leaves it
        assert Customer.objects.get(pk=customer.pk).last_activity_at == at

    def test_a_retry_with_the_same_event_id_is_not_counted_twice(self, api, customer):
        event_id = str(uuid.uuid4())
        first = track(api, customer, event_id=event_id)
        again = track(api, customer, event_id=event_id)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        other = CustomerFactory(email="other@example.com")
        clash = track(api, other, event_id=event_id)
        assert (clash.status_code, clash.json()["code"]) == (409, "ACTIVITY_ID_CONFLICT")

    @pytest.mark.parametrize(
        "body",
        [
            {"type": "hacked"},
            {"occurred_at": (NOW + timedelta(hours=1)).isoformat()},
            {"data": {"blob": "x" * 5000}},
            {"surprise": 1},
        ],
        ids=["unknown-type", "future", "too-big", "unknown-field"],
    )
    def test_refuses_what_it_cannot_keep(self, api, customer, body):
        response = track(api, customer, **body)
        assert response.status_code == 400
        assert response.json()["code"] == "VALIDATION_ERROR"

    def test_an_erased_customer_is_not_tracked(self, api, customer):
        Customer.objects.filter(pk=customer.pk).update(status="erased")
        response = track(api, customer)
        assert (response.status_code, response.json()["code"]) == (409, "CUSTOMER_ERASED")

    def test_needs_write_scope_and_respects_the_customer_limit(self, api_client, customer):
        other = CustomerFactory(email="other@example.com")
        reader = api_client([SCOPE_READ])
        assert track(reader, customer).status_code == 403
        own = api_client(["customers:read", "customers:write"], customer=customer)
        assert track(own, customer).status_code == 201
        for response in (track(own, other), timeline(own, other)):
            assert (response.status_code, response.json()["code"]) == (404, "CUSTOMER_NOT_FOUND")
        assert timeline(own, customer).status_code == 200
        missing = api_client([SCOPE_READ]).get(f"{URL}/{uuid.uuid4()}/timeline")
        assert missing.status_code == 404


class TestTimeline:
    def test_newest_first_filtered_by_type_and_dates(self, api, customer):
        CustomerActivity.objects.filter(customer=customer).delete()
        add(customer, "page_view", NOW - timedelta(days=3))
        add(customer, "login", NOW - timedelta(days=2))
        add(customer, "email_open", NOW - timedelta(days=1))
        add(customer, "login", NOW)
        body = timeline(api, customer).json()
        assert [r["type"] for r in body["results"]] == ["login", "email_open", "login", "page_view"]
        assert body["next"] is None and body["previous"] is None
        assert [r["type"] for r in timeline(api, customer, type="login,email_open").json()["results"]] == [
            "login",
            "email_open",
            "login",
        ]
        repeated = api.get(f"{URL}/{customer.pk}/timeline?type=page_view&type=email_open").json()
        assert [r["type"] for r in repeated["results"]] == ["email_open", "page_view"]
        ranged = timeline(
            api,
            customer,
            occurred_after=(NOW - timedelta(days=2)).isoformat(),
            occurred_before=(NOW - timedelta(hours=1)).isoformat(),
        ).json()
        assert [r["type"] for r in ranged["results"]] == ["email_open", "login"]

    def test_cursor_pages_stay_stable_while_activity_arrives(self, api, customer):
        CustomerActivity.objects.filter(customer=customer).delete()
        same_moment = NOW - timedelta(hours=1)
        entries = [add(customer, at=same_moment if i % 2 else NOW - timedelta(hours=i)) for i in range(7)]
        expected = [e.pk for e in sorted(entries, key=lambda e: (e.occurred_at, e.pk), reverse=True)]

        first = timeline(api, customer, page_size=3).json()
        add(customer, at=NOW + timedelta(minutes=1))  # newer: not on later pages
        add(customer, at=same_moment)  # same moment, later id: sorts before the cursor
        second = api.get(first["next"]).json()
        third = api.get(second["next"]).json()
        seen = [r["id"] for r in first["results"] + second["results"] + third["results"]]
        assert seen == expected
        assert third["next"] is None
        back = api.get(third["previous"]).json()
        assert [r["id"] for r in back["results"]] == [r["id"] for r in second["results"]]

    def test_a_broken_cursor_is_a_validation_error(self, api, customer):
        response = timeline(api, customer, cursor="not-a-cursor")
        assert (response.status_code, response.json()["code"]) == (400, "VALIDATION_ERROR")


class TestOurEventsOnTheTimeline:
    def test_profile_status_and_registration_land_without_personal_data(self, customer):
        actor = Actor.system("tests")
        services.customer_update(actor=actor, customer_id=customer.pk, changes={"first_name": "Zoe", "phone": ""})
        services.customer_change_status(actor=actor, customer_id=customer.pk, status="inactive", reason="asked by Zoe")
        entries = {e.type: e for e in CustomerActivity.objects.filter(customer=customer)}
        assert entries["registered"].summary == "Registered (source: web)"
        assert "shopper@example.com" not in str(entries["registered"].data)
        assert entries["profile_changed"].summary == "Profile changed: first_name"
        assert entries["status_changed"].summary == "Status active → inactive"
        assert "Zoe" not in str(entries["status_changed"].data)  # the reason is personal
        assert entries["registered"].source == "customer-service" and entries["registered"].event_id

    def test_address_and_consent_changes_land_from_their_own_events(self, customer):
        from addresses import services as address_services
        from consent import services as consent_services
        from tests.addresses.factories import make_address

        actor = Actor.system("tests")
        make_address(customer, country="DE")  # the first shipping address: the default too
        work = make_address(customer, country="FR", label="Work")
        address_services.address_set_default(actor=actor, customer_id=customer.pk, address_id=work.pk, kind="shipping")
        for status in ("granted", "revoked"):
            consent_services.consent_change(
                actor=actor, customer_id=customer.pk, purpose_code="marketing_email", status=status, source="web"
            )
        kinds = ("address_added", "default_address_changed", "consent_granted", "consent_revoked")
        entries = list(CustomerActivity.objects.filter(customer=customer, type__in=kinds).order_by("occurred_at", "pk"))
        assert [(e.type, e.summary) for e in entries] == [
            ("address_added", "Address added (shipping, DE)"),
            ("default_address_changed", "Default shipping address changed"),
            ("address_added", "Address added (shipping, FR)"),
            ("default_address_changed", "Default shipping address changed"),
            ("consent_granted", "Consent granted: marketing_email"),
            ("consent_revoked", "Consent revoked: marketing_email"),
        ]
        # Each entry is one of our outbound events, named by its id.
        outbox = dict(OutboxEvent.objects.filter(subject=str(customer.pk)).values_list("event_id", "event_type"))
        assert [outbox[e.event_id] for e in entries] == [
            "customer.address.added.v1",
            "customer.default_address.changed.v1",
            "customer.address.added.v1",
            "customer.default_address.changed.v1",
            "customer.consent.granted.v1",
            "customer.consent.revoked.v1",
        ]
        assert {e.source for e in entries} == {"customer-service"}
        assert entries[3].data["new_address_id"] == str(work.pk)

    def test_inbound_events_land_too(self, customer):
        from tests.events.test_inbound import apply, order

        apply(order("created", customer, "o-77", "12.50"))
        entry = CustomerActivity.objects.get(customer=customer, type="order_created")
        assert (entry.summary, entry.source) == ("Order o-77 placed: 12.50 EUR", "orders")


def test_the_admin_customer_page_shows_the_timeline(client, customer):
    add(customer, "email_click", summary="Clicked the spring newsletter")
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    page = client.get(f"/admin/customers/customer/{customer.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Activity timeline" in html and "Clicked the spring newsletter" in html
    assert "Registered (source: web)" in html
    listing = client.get(f"/admin/customers/customeractivity/?customer__id__exact={customer.pk}")
    assert listing.status_code == 200 and "Clicked the spring newsletter" in listing.content.decode()


def test_the_dead_letter_admin_replays(client, customer):
    from tests.events.test_inbound import apply, order

    ghost = uuid.uuid4()
    apply(order("created", ghost, "o-1"))
    Customer.objects.filter(pk=customer.pk).update(external_id=str(ghost))
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    assert "WAITING_FOR_CUSTOMER" in client.get("/admin/customers/deadletter/").content.decode()
    from customers.models import DeadLetter

    dead = DeadLetter.objects.get()
    response = client.post(
        "/admin/customers/deadletter/", {"action": "replay", "_selected_action": [dead.pk]}, follow=True
    )
    assert "1 applied" in response.content.decode()
    assert Customer.objects.get(pk=customer.pk).order_count == 1


def test_old_activity_is_pruned(customer, settings):
    settings.ACTIVITY_RETENTION_MONTHS = 24
    old = add(customer, at=datetime(2020, 1, 1, tzinfo=UTC))
    recent = add(customer)
    assert activity.activity_prune(before=NOW - timedelta(days=365), dry_run=True) == 1
    assert tasks.prune_activity.delay().get() == 1
    remaining = set(CustomerActivity.objects.values_list("pk", flat=True))
    assert old.pk not in remaining and recent.pk in remaining


def test_erasure_scrubs_the_timeline(customer):
    add(customer, summary="Searched for 'Jane Doe birthday gift'")
    services.erase_customers_data([customer.pk])
    assert not CustomerActivity.objects.filter(customer=customer).exists()  # deleted, not blanked (issue 6)
