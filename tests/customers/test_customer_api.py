from datetime import date, timedelta

import pytest
from django.utils import timezone

from customers.models import Customer, CustomerPreferences, CustomerStatusChange, OutboxEvent
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/customers"


def problem_code(response):
    assert response["Content-Type"] == "application/problem+json", response.content
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == response.status_code
    return body["code"]


class TestCreate:
    def test_creates_with_normalized_fields_location_and_defaults(self, api):
        response = api.post(
            URL,
            {
                "email": "  Ann.Lee@Example.COM ",
                "first_name": "Ann",
                "last_name": "Lee",
                "phone": "+1 415-555-2671",
                "date_of_birth": "1990-02-03",
                "tags": ["vip", "vip", "newsletter"],
                "metadata": {"crm": "x1"},
                "preferences": {"language": "pt-br", "currency": "brl", "communication": {"email": True}},
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert response["Location"] == f"/api/v1/customers/{body['id']}"
        assert body["email"] == "ann.lee@example.com"
        assert body["phone"] == "+14155552671"
        assert body["tags"] == ["vip", "newsletter"]
        assert body["customer_number"].startswith("C") and len(body["customer_number"]) == 10
        assert body["status"] == "active" and body["version"] == 1
        assert body["preferences"]["language"] == "pt-BR"
        assert body["preferences"]["currency"] == "BRL"
        assert body["preferences"]["communication"]["email"] is True
        assert body["preferences"]["notifications"]["order_updates"] is True
        assert body["metrics"] == {
            "order_count": 0,
            "open_order_count": 0,
            "total_spent": "0.00",
            "currency": "USD",
            "average_order_value": "0.00",
            "last_order_at": None,
            "loyalty_points": 0,
            "satisfaction_score": None,
        }
        assert body["profile_completeness"] == 83  # 5 of 6 core fields (gender unknown)

    @pytest.mark.parametrize(
        "payload",
        [
            {
                "email": " Ann.Lee@Example.COM",
                "first_name": " Ann ",
                "last_name": "Lee",
                "phone": "+1 415-555-2671",
                "date_of_birth": "1990-02-03",
                "customer_type": "business",
                "company_name": "ACME",
                "registration_source": "mobile",
                "external_id": " L-7 ",
                "tags": ["vip", "vip", "newsletter"],
                "email_verified": True,
                "registered_at": "2024-05-06T07:08:09.123456+02:00",
                "preferences": {
                    "language": "pt-br",
                    "currency": "brl",
                    "timezone": "Europe/Lisbon",
                    "communication": {"email": True, "sms": True},
                    "privacy": {"personalization": True},
                    "theme": "dark",
                },
            },
            # JSON that jsonb gives back in another key order and number form: the create reads it back.
            {"email": "j@example.com", "metadata": {"b": 1, "a": [1e20, {"z": 1, "y": 2}]}, "custom_attributes": {}},
        ],
        ids=["answered-from-the-saved-instance", "read-back-for-its-json"],
    )
    def test_the_response_is_the_customer_as_a_read_shows_it(self, api, payload):
        response = api.post(URL, payload, format="json")
        assert response.status_code == 201, response.content
        assert api.get(response["Location"]).content == response.content  # byte for byte

    def test_a_create_reads_nothing_it_wrote(self, api, django_assert_max_num_queries):
        """Guards the reloads removed from a create. Its statements: the email pre-check; the customer
        (RETURNING its number) and preferences with their history rows; the event (lock, outbox row,
        timeline entry); consent (purposes with whether recorded, versions, records, states); one
        query for duplicates; the representation's addresses, tier and opt-ins. 16, and here the savepoint
        of customer_create's atomic block inside the test's transaction (BEGIN and COMMIT outside one)."""
        payload = {"email": "q@example.com", "first_name": "Ann", "last_name": "Lee", "phone": "+14155552671"}
        with django_assert_max_num_queries(18):
            response = api.post(URL, payload, format="json")
        assert response.status_code == 201, response.content

    def test_an_email_taken_since_the_pre_check_is_409_and_writes_nothing(self, api, monkeypatch):
        """The unique index catches the race the pre-check loses; the enclosing transaction goes on."""
        from customers import services

        CustomerFactory(email="race@example.com")
        events_before, customers_before = OutboxEvent.objects.count(), Customer.objects.count()
        monkeypatch.setattr(services, "_email_taken", lambda email, excluding=None: False)
        response = api.post(URL, {"email": "Race@example.com"}, format="json")
        assert response.status_code == 409
        assert problem_code(response) == "EMAIL_ALREADY_EXISTS"
        assert (OutboxEvent.objects.count(), Customer.objects.count()) == (events_before, customers_before)
        assert api.post(URL, {"email": "next@example.com"}, format="json").status_code == 201

    def test_customer_numbers_come_from_a_sequence(self, api):
        first = api.post(URL, {"email": "a@example.com"}, format="json").json()["customer_number"]
        second = api.post(URL, {"email": "b@example.com"}, format="json").json()["customer_number"]
        assert int(second[1:]) == int(first[1:]) + 1

    @pytest.mark.parametrize("email", ["not-an-email", "a@", "@b.com", "a b@c.com", ""])
    def test_malformed_email(self, api, email):
        response = api.post(URL, {"email": email}, format="json")
        assert response.status_code == 400
        assert problem_code(response) in {"INVALID_EMAIL_FORMAT", "VALIDATION_ERROR"}
        if email:
            assert problem_code(response) == "INVALID_EMAIL_FORMAT"
            assert "email" in response.json()["errors"]
        assert not Customer.objects.exists()

    def test_duplicate_email_in_any_case_is_409_and_writes_nothing(self, api):
        CustomerFactory(email="dup@example.com")
        events_before = OutboxEvent.objects.count()
        response = api.post(URL, {"email": "DUP@Example.com"}, format="json")
        assert response.status_code == 409
        assert problem_code(response) == "EMAIL_ALREADY_EXISTS"
        assert Customer.objects.count() == 1
        assert OutboxEvent.objects.count() == events_before

    def test_date_of_birth_in_future_and_too_old(self, api):
        tomorrow = (date.today() + timedelta(days=1)).isoformat()
        response = api.post(URL, {"email": "f@example.com", "date_of_birth": tomorrow}, format="json")
        assert response.status_code == 400 and "date_of_birth" in response.json()["errors"]
        response = api.post(URL, {"email": "f@example.com", "date_of_birth": "1850-01-01"}, format="json")
        assert response.status_code == 400 and "date_of_birth" in response.json()["errors"]
        assert not Customer.objects.exists()

    @pytest.mark.parametrize(
        "payload, field",
        [
            ({"bogus": 1}, "bogus"),
            ({"first_name": {"x": 1}}, "first_name"),
            ({"tags": "vip"}, "tags"),
            ({"metadata": [1, 2]}, "metadata"),
            ({"date_of_birth": "yesterday"}, "date_of_birth"),
            ({"gender": "robot"}, "gender"),
            ({"phone": "12345"}, "phone"),
            ({"preferences": {"language": "not a language"}}, "language"),
            ({"preferences": {"currency": "XXY"}}, "currency"),
            ({"preferences": {"timezone": "Mars/Olympus"}}, "timezone"),
            ({"preferences": {"communication": {"fax": True}}}, "preferences"),
            ({"metadata": {"blob": "x" * 20000}}, "metadata"),
            ({"custom_attributes": {"blob": "x" * 20000}}, "custom_attributes"),
            ({"custom_attributes": ["not", "an", "object"]}, "custom_attributes"),
            ({"customer_type": "business"}, "company_name"),
        ],
    )
    def test_bad_fields_are_refused_with_field_errors(self, api, payload, field):
        response = api.post(URL, {"email": "x@example.com", **payload}, format="json")
        assert response.status_code == 400, response.content
        assert field in response.json()["errors"], response.json()
        assert not Customer.objects.exists()
        assert not OutboxEvent.objects.exists()

    def test_malformed_json_body(self, api):
        response = api.generic("POST", URL, "{not json", content_type="application/json")
        assert response.status_code == 400
        assert problem_code(response) == "MALFORMED_REQUEST"

    def test_a_body_of_another_media_type_is_refused(self, api):
        response = api.generic("POST", URL, "email=a@example.com", content_type="text/plain")
        assert response.status_code == 415
        assert response["Content-Type"].startswith("application/problem+json")
        assert problem_code(response) == "UNSUPPORTED_MEDIA_TYPE"
        assert not Customer.objects.exists()

    def test_external_id_is_unique_when_set(self, api):
        assert api.post(URL, {"email": "a@example.com", "external_id": "L-1"}, format="json").status_code == 201
        assert api.post(URL, {"email": "b@example.com", "external_id": ""}, format="json").status_code == 201
        assert api.post(URL, {"email": "c@example.com", "external_id": ""}, format="json").status_code == 201
        response = api.post(URL, {"email": "d@example.com", "external_id": "L-1"}, format="json")
        assert response.status_code == 400
        assert problem_code(response) == "EXTERNAL_ID_ALREADY_EXISTS"


class TestReadAndList:
    def test_get_unknown_and_malformed_ids(self, api):
        response = api.get(f"{URL}/00000000-0000-0000-0000-000000000000")
        assert response.status_code == 404 and problem_code(response) == "CUSTOMER_NOT_FOUND"
        for unmatched in [f"{URL}/not-a-uuid", "/api/v1/no-such-thing"]:
            response = api.get(unmatched)
            assert response.status_code == 404 and problem_code(response) == "NOT_FOUND", unmatched

    def test_pages_outside_the_api_keep_djangos_404(self, client):
        response = client.get("/no-such-page")
        assert response.status_code == 404 and response["Content-Type"].startswith("text/html")

    def test_list_is_cursor_paginated_with_page_size_capped(self, api):
        now = timezone.now()
        customers = Customer.objects.bulk_create(
            Customer(email=f"p{n}@example.com", created_at=now - timedelta(seconds=n)) for n in range(105)
        )
        CustomerPreferences.objects.bulk_create(CustomerPreferences(customer=c, updated_at=now) for c in customers)
        page = api.get(URL).json()
        assert set(page) == {"next", "previous", "results"}
        assert len(page["results"]) == 20 and page["previous"] is None and page["next"] is not None
        assert len(api.get(URL, {"page_size": 3}).json()["results"]) == 3
        capped = api.get(URL, {"page_size": 500}).json()
        assert len(capped["results"]) == 100 and capped["next"] is not None  # the cap is 100
        rest = api.get(capped["next"]).json()
        assert len(rest["results"]) == 5 and rest["next"] is None
        seen = {c["id"] for c in capped["results"]} | {c["id"] for c in rest["results"]}
        assert len(seen) == 105

    def test_filters(self, api, system_actor):
        from customers import services

        a = CustomerFactory(email="a@example.com", tags=["vip"], registration_source="mobile")
        b = CustomerFactory(email="b@example.com", customer_type="business", company_name="Acme")
        services.customer_change_status(actor=system_actor, customer_id=b.pk, status="inactive", reason="test")

        def ids(**params):
            return {c["id"] for c in api.get(URL, params).json()["results"]}

        assert ids(status="inactive") == {str(b.pk)}
        assert ids(customer_type="business") == {str(b.pk)}
        assert ids(tag="vip") == {str(a.pk)}
        assert ids(registration_source="mobile") == {str(a.pk)}
        assert ids(created_after="2000-01-01T00:00:00Z") == {str(a.pk), str(b.pk)}
        assert ids(created_before="2000-01-01T00:00:00Z") == set()
        response = api.get(URL, {"status": "sleeping"})
        assert response.status_code == 400 and problem_code(response) == "VALIDATION_ERROR"

    def test_search_by_partial_name_email_phone_and_number(self, api):
        ann = CustomerFactory(email="ann.lee@shop.example", first_name="Ann", last_name="Leeway", phone="+14155552671")
        CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Stone", phone="+442079460123")

        def found(q):
            return [c["id"] for c in api.get(URL, {"q": q}).json()["results"]]

        assert found("leew") == [str(ann.pk)]
        assert found("ann lee") == [str(ann.pk)]
        assert found("ANN.LEE@") == [str(ann.pk)]
        assert found("415-555-2671") == [str(ann.pk)]
        assert found("+1 (415) 555 2671") == [str(ann.pk)]
        assert found(ann.customer_number) == [str(ann.pk)]
        assert found("zzz") == []

    def test_exact_identifier_filters(self, api):
        ann = CustomerFactory(email="ann@example.com", external_id="crm-1")
        CustomerFactory(email="joann@example.com", external_id="crm-11")
        CustomerFactory(email="ann@example.com.au")

        def found(**params):
            return [c["id"] for c in api.get(URL, params).json()["results"]]

        assert len(found(q="ann@example.com")) == 3  # a search finds the longer emails too
        assert found(email=" ANN@Example.com ") == [str(ann.pk)]
        assert found(customer_number=ann.customer_number.lower()) == [str(ann.pk)]
        assert found(external_id="crm-1") == [str(ann.pk)]
        assert found(email="ann@example.com", status="inactive") == []
        assert found(email="nobody@example.com") == []

    def test_search_by_part_of_a_customer_number(self, api):
        ann = CustomerFactory(email="ann@example.com", phone="")
        bob = CustomerFactory(email="bob@example.com", phone="")
        Customer.objects.filter(pk=ann.pk).update(customer_number="C001550425")
        Customer.objects.filter(pk=bob.pk).update(customer_number="C000155042")

        def found(q):
            return {c["customer_number"] for c in api.get(URL, {"q": q}).json()["results"]}

        assert found("550425") == {"C001550425"}  # the middle and the end of one number
        assert found("55042") == {"C001550425", "C000155042"}
        assert found("155042") == {"C001550425", "C000155042"}  # bob's number exactly (1550425 without zeros)
        assert found("0155042") == {"C001550425", "C000155042"}  # leading zeros do not narrow a part
        assert found("5504") == set()  # too few digits to be a part of a number

    def test_ordering(self, api):
        CustomerFactory(email="a@example.com", last_name="Zed")
        CustomerFactory(email="b@example.com", last_name="Abe")
        names = [c["last_name"] for c in api.get(URL, {"ordering": "last_name"}).json()["results"]]
        assert names == ["Abe", "Zed"]


class TestUpdate:
    def test_patch_changes_fields_bumps_version_and_records_changed_names(self, api):
        customer = CustomerFactory(email="a@example.com", first_name="Ann")
        response = api.patch(f"{URL}/{customer.pk}", {"first_name": "Anna", "phone": "+4930 1234567"}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["first_name"] == "Anna" and body["phone"] == "+49301234567" and body["version"] == 2
        event = OutboxEvent.objects.filter(event_type="customer.updated.v1").get()
        assert event.data["changed_fields"] == ["first_name", "phone"]
        assert "Ann" not in str(event.data)  # names, not old values

    def test_put_requires_email_and_accepts_its_own_representation(self, api):
        customer = CustomerFactory(email="a@example.com")
        assert api.put(f"{URL}/{customer.pk}", {"first_name": "X"}, format="json").status_code == 400
        current = api.get(f"{URL}/{customer.pk}").json()
        current.pop("preferences")
        current["last_name"] = "Changed"
        response = api.put(f"{URL}/{customer.pk}", current, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["last_name"] == "Changed"

    def test_email_change_to_taken_address_conflicts(self, api):
        CustomerFactory(email="taken@example.com")
        customer = CustomerFactory(email="mine@example.com")
        response = api.patch(f"{URL}/{customer.pk}", {"email": "Taken@example.com"}, format="json")
        assert response.status_code == 409 and problem_code(response) == "EMAIL_ALREADY_EXISTS"
        customer.refresh_from_db()
        assert customer.email == "mine@example.com" and customer.version == 1

    def test_if_match_guards_against_lost_updates(self, api):
        customer = CustomerFactory(email="a@example.com")
        ok = api.patch(f"{URL}/{customer.pk}", {"first_name": "B"}, format="json", HTTP_IF_MATCH='"1"')
        assert ok.status_code == 200
        stale = api.patch(f"{URL}/{customer.pk}", {"first_name": "C"}, format="json", HTTP_IF_MATCH='"1"')
        assert stale.status_code == 409 and problem_code(stale) == "VERSION_CONFLICT"

    def test_no_op_patch_writes_nothing(self, api):
        customer = CustomerFactory(email="a@example.com", first_name="Ann")
        before = OutboxEvent.objects.count()
        assert api.patch(f"{URL}/{customer.pk}", {"first_name": "Ann"}, format="json").json()["version"] == 1
        assert OutboxEvent.objects.count() == before

    def test_metrics_are_read_only(self, api):
        customer = CustomerFactory(email="a@example.com")
        response = api.patch(f"{URL}/{customer.pk}", {"order_count": 99}, format="json")
        assert response.status_code == 400 and "order_count" in response.json()["errors"]

    @pytest.mark.parametrize(
        "method, tail",
        [("PUT", ""), ("PATCH", ""), ("PUT", "/preferences"), ("PATCH", "/preferences"), ("POST", "/status")],
    )
    def test_a_body_that_is_not_json_is_malformed_and_changes_nothing(self, api, method, tail):
        customer = CustomerFactory(email="a@example.com")
        response = api.generic(method, f"{URL}/{customer.pk}{tail}", "{not json", content_type="application/json")
        assert response.status_code == 400 and problem_code(response) == "MALFORMED_REQUEST"
        customer.refresh_from_db()
        assert customer.version == 1

    def test_a_merged_customer_cannot_be_changed_here(self, api, system_actor):
        from customers import services

        survivor = CustomerFactory(email="a@example.com")
        merged = CustomerFactory(email="b@example.com", first_name="Bea")
        services.customer_merge(actor=system_actor, survivor_id=survivor.pk, merged_id=merged.pk)
        version = Customer.objects.get(pk=merged.pk).version
        whole_preferences = {**api.get(f"{URL}/{merged.pk}/preferences").json(), "theme": "dark"}
        whole_preferences.pop("updated_at")
        for method, tail, body in [
            ("patch", "", {"first_name": "X"}),
            ("put", "", {"email": "b@example.com", "first_name": "X"}),
            ("patch", "/preferences", {"theme": "dark"}),
            ("put", "/preferences", whole_preferences),
        ]:
            response = getattr(api, method)(f"{URL}/{merged.pk}{tail}", body, format="json")
            assert response.status_code == 409 and problem_code(response) == "CUSTOMER_MERGED", (method, tail)
        merged.refresh_from_db()
        assert merged.first_name == "Bea" and merged.version == version and merged.preferences.theme != "dark"


class TestPreferences:
    def test_get_put_patch(self, api):
        customer = CustomerFactory(email="a@example.com")
        url = f"{URL}/{customer.pk}/preferences"
        assert api.get(url).json()["timezone"] == "UTC"
        response = api.patch(url, {"timezone": "Europe/Berlin", "privacy": {"analytics_tracking": True}}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["timezone"] == "Europe/Berlin"
        assert response.json()["privacy"]["analytics_tracking"] is True
        # A PUT carries the whole document: a partial one is refused, naming what is missing.
        partial = api.put(url, {"language": "de-DE", "currency": "EUR", "theme": "dark"}, format="json")
        assert partial.status_code == 400 and problem_code(partial) == "VALIDATION_ERROR"
        assert {"timezone", "communication", "privacy"} <= set(partial.json()["errors"])
        whole = {**api.get(url).json(), "language": "de-DE", "currency": "EUR", "theme": "dark"}
        whole.pop("updated_at")
        response = api.put(url, whole, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["theme"] == "dark" and response.json()["timezone"] == "Europe/Berlin"
        event = OutboxEvent.objects.filter(event_type="customer.preferences.updated.v1").first()
        assert event.subject == str(customer.pk)
        bad = api.patch(url, {"currency": "EURO"}, format="json")
        assert bad.status_code == 400 and "currency" in bad.json()["errors"]


class TestPut:
    def test_put_replaces_the_profile_and_keeps_account_facts(self, api):
        customer = CustomerFactory(
            email="a@example.com", first_name="Ann", phone="+14155552671", tags=["vip"], external_id="L-9"
        )
        response = api.put(f"{URL}/{customer.pk}", {"email": "a@example.com", "last_name": "Lee"}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["first_name"], body["last_name"], body["phone"], body["tags"]) == ("", "Lee", "", [])
        assert body["gender"] == "unknown" and body["metadata"] == {} and body["external_id"] == "L-9"

    def test_put_needs_the_email(self, api):
        customer = CustomerFactory(email="a@example.com")
        response = api.put(f"{URL}/{customer.pk}", {"first_name": "Ann"}, format="json")
        assert response.status_code == 400 and "email" in response.json()["errors"]


class TestStatusAndDeactivate:
    def test_delete_deactivates(self, api):
        customer = CustomerFactory(email="a@example.com")
        assert api.delete(f"{URL}/{customer.pk}").status_code == 204
        customer.refresh_from_db()
        assert customer.status == "inactive"
        types = set(OutboxEvent.objects.values_list("event_type", flat=True))
        assert {"customer.status_changed.v1", "customer.deactivated.v1"} <= types
        assert api.delete(f"{URL}/{customer.pk}").status_code == 204  # idempotent

    def test_active_inactive_round_trip_records_who_and_why(self, api):
        customer = CustomerFactory(email="a@example.com")
        url = f"{URL}/{customer.pk}/status"
        response = api.post(url, {"status": "inactive", "reason": "asked by phone"}, format="json")
        assert response.status_code == 200 and response.json()["status"] == "inactive"
        assert api.post(url, {"status": "active", "reason": "came back"}, format="json").status_code == 200
        changes = list(CustomerStatusChange.objects.filter(customer=customer).order_by("id"))
        assert [(c.from_status, c.to_status, c.reason, c.actor) for c in changes] == [
            ("active", "inactive", "asked by phone", "token:tests"),
            ("inactive", "active", "came back", "token:tests"),
        ]

    def test_suspension_needs_admin_scope(self, api, admin_api):
        customer = CustomerFactory(email="a@example.com")
        url = f"{URL}/{customer.pk}/status"
        response = api.post(url, {"status": "suspended", "reason": "fraud"}, format="json")
        assert response.status_code == 403 and problem_code(response) == "PERMISSION_DENIED"
        assert admin_api.post(url, {"status": "suspended", "reason": "fraud"}, format="json").status_code == 200
        response = api.post(url, {"status": "active", "reason": "cleared"}, format="json")
        assert response.status_code == 403
        assert api.delete(f"{URL}/{customer.pk}").status_code == 409
        assert admin_api.post(url, {"status": "active", "reason": "cleared"}, format="json").status_code == 200

    def test_erased_is_not_reachable_here_and_reason_is_required(self, admin_api):
        customer = CustomerFactory(email="a@example.com")
        url = f"{URL}/{customer.pk}/status"
        response = admin_api.post(url, {"status": "erased", "reason": "asked"}, format="json")
        assert response.status_code == 409 and problem_code(response) == "INVALID_STATUS_TRANSITION"
        response = admin_api.post(url, {"status": "inactive", "reason": ""}, format="json")
        assert response.status_code == 400 and "reason" in response.json()["errors"]
        response = admin_api.post(url, {"status": "gone", "reason": "x"}, format="json")
        assert response.status_code == 400
        customer.refresh_from_db()
        assert customer.status == "active"
