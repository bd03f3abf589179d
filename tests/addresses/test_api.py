"""The address book API: every endpoint with its status codes, errors, scopes and the own-customer limit."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from addresses.models import MAX_ACTIVE_ADDRESSES, Address
from customers.actor import SCOPE_READ
from tests.addresses.factories import address_data, make_address

pytestmark = pytest.mark.django_db


def book(customer) -> str:
    return f"/api/v1/customers/{customer.pk}/addresses"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status
    return body


class TestCreate:
    def test_created_validated_and_normalized(self, api, customer):
        response = api.post(
            book(customer),
            address_data("US", state="california", postal_code="94043-1351", phone="(650) 253-0000"),
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert response["Location"] == f"{book(customer)}/{body['id']}"
        assert body["state"] == "CA" and body["country"] == "US" and body["postal_code"] == "94043-1351"
        assert body["phone"] == "+16502530000" and body["is_validated"] is True
        assert body["is_default"] is True and body["is_default_shipping"] is True and not body["is_default_billing"]
        assert body["customer_id"] == str(customer.pk)
        assert set(body) == {
            "id", "customer_id", "type", "label", "first_name", "last_name", "company", "line1", "line2", "city",
            "state", "postal_code", "country", "phone", "latitude", "longitude", "is_default", "is_default_shipping",
            "is_default_billing", "is_validated", "last_used_at", "created_at", "updated_at",
        }  # fmt: skip

    def test_coordinates_are_numbers(self, api, customer):
        response = api.post(book(customer), address_data("DE", latitude=52.5163, longitude=13.3777), format="json")
        assert (response.json()["latitude"], response.json()["longitude"]) == (52.5163, 13.3777)

    def test_a_us_zip_in_a_german_address_is_refused_with_field_errors(self, api, customer):
        body = assert_problem(
            api.post(book(customer), address_data("DE", postal_code="94043-1351"), format="json"),
            400,
            "VALIDATION_ERROR",
        )
        assert list(body["errors"]) == ["postal_code"]
        assert not Address.objects.exists()

    def test_an_unknown_country_is_refused(self, api, customer):
        body = assert_problem(
            api.post(book(customer), address_data("DE") | {"country": "QQ"}, format="json"), 400, "VALIDATION_ERROR"
        )
        assert list(body["errors"]) == ["country"]

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"street": "x"}, "street"),
            ({"type": "home"}, "type"),
            ({"latitude": 100, "longitude": 0}, "latitude"),
        ],
    )
    def test_malformed_input_is_refused(self, api, customer, payload, field):
        body = assert_problem(
            api.post(book(customer), address_data("DE") | payload, format="json"), 400, "VALIDATION_ERROR"
        )
        assert field in body["errors"]

    def test_required_fields(self, api, customer):
        body = assert_problem(api.post(book(customer), {}, format="json"), 400, "VALIDATION_ERROR")
        assert {"type", "line1", "country"} <= set(body["errors"])

    def test_is_default_makes_it_the_default(self, api, customer):
        first = make_address(customer)
        second = api.post(book(customer), address_data("DE", is_default=True), format="json").json()
        assert second["is_default_shipping"] is True
        assert api.get(f"{book(customer)}/{first.pk}").json()["is_default"] is False

    def test_the_eleventh_address_is_refused(self, api, customer):
        for number in range(MAX_ACTIVE_ADDRESSES):
            make_address(customer, label=f"#{number}")
        body = assert_problem(
            api.post(book(customer), address_data("DE"), format="json"), 400, "ADDRESS_LIMIT_EXCEEDED"
        )
        assert "10" in body["detail"]

    def test_unknown_customer(self, api):
        response = api.post(f"/api/v1/customers/{uuid.uuid4()}/addresses", address_data(), format="json")
        assert_problem(response, 404, "CUSTOMER_NOT_FOUND")


class TestRead:
    def test_list_with_type_filter(self, api, customer):
        shipping = make_address(customer, type="shipping")
        billing = make_address(customer, type="billing")
        both = make_address(customer, type="both")
        deleted = make_address(customer, type="shipping", label="Old")
        api.delete(f"{book(customer)}/{deleted.pk}")

        def ids(query=""):
            response = api.get(book(customer) + query)
            assert response.status_code == 200
            return {item["id"] for item in response.json()["results"]}

        assert ids() == {str(shipping.pk), str(billing.pk), str(both.pk)}
        assert ids("?type=shipping") == {str(shipping.pk), str(both.pk)}
        assert ids("?type=billing") == {str(billing.pk), str(both.pk)}
        assert ids("?type=both") == {str(both.pk)}
        assert_problem(api.get(book(customer) + "?type=home"), 400, "VALIDATION_ERROR")

    def test_list_is_newest_first_and_orderable(self, api, customer):
        first = make_address(customer, label="First")
        second = make_address(customer, label="Second")
        assert [a["id"] for a in api.get(book(customer)).json()["results"]] == [str(second.pk), str(first.pk)]
        oldest_first = api.get(book(customer) + "?ordering=created_at").json()["results"]
        assert [a["id"] for a in oldest_first] == [str(first.pk), str(second.pk)]

    def test_retrieve(self, api, customer):
        address = make_address(customer)
        body = api.get(f"{book(customer)}/{address.pk}").json()
        assert body["id"] == str(address.pk) and body["line1"] == "Unter den Linden 77"

    def test_unknown_and_deleted_addresses_are_not_found(self, api, customer):
        assert_problem(api.get(f"{book(customer)}/{uuid.uuid4()}"), 404, "ADDRESS_NOT_FOUND")
        address = make_address(customer)
        assert api.delete(f"{book(customer)}/{address.pk}").status_code == 204
        assert_problem(api.get(f"{book(customer)}/{address.pk}"), 404, "ADDRESS_NOT_FOUND")

    def test_the_query_count_does_not_grow_with_the_addresses(self, api, customer, other_customer):
        make_address(other_customer)
        for number in range(5):
            make_address(customer, label=f"#{number}")
        api.get(book(other_customer))  # warm up (content types, etc.)

        def queries(target):
            with CaptureQueriesContext(connection) as captured:
                response = api.get(book(target))
            assert response.status_code == 200
            return len(captured), len(response.json()["results"])

        assert queries(other_customer)[1] == 1 and queries(customer)[1] == 5
        assert queries(other_customer)[0] == queries(customer)[0] <= 2


class TestUpdate:
    def test_put_replaces_and_clears_what_is_left_out(self, api, customer):
        address = make_address(customer, line2="c/o Meyer", phone="+49 30 1234567", company="ACME")
        replacement = address_data("GB", type="both", label="London flat")
        response = api.put(f"{book(customer)}/{address.pk}", replacement, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["country"], body["postal_code"], body["type"]) == ("GB", "SW1A 2AA", "both")
        assert body["line2"] == "" and body["phone"] == "" and body["company"] == ""
        assert body["is_default_billing"] is True  # the first billing address now

    def test_put_changing_every_field(self, api, customer):
        address = make_address(customer)
        replacement = address_data(
            "US",
            type="billing",
            label="Office",
            first_name="Bo",
            last_name="Ray",
            company="ACME Inc.",
            line2="Suite 100",
            phone="+1 650 253 0000",
            latitude=37.422,
            longitude=-122.084,
        )
        response = api.put(f"{book(customer)}/{address.pk}", replacement, format="json")
        assert response.status_code == 200, response.content
        last = Address.history.filter(id=address.pk).latest("history_date")
        assert last.history_change_reason.startswith("updated: city, company, country")
        assert len(last.history_change_reason) <= 100

    def test_put_back_what_was_got(self, api, customer):
        address = make_address(customer)
        got = api.get(f"{book(customer)}/{address.pk}").json()
        got["label"] = "Work"
        response = api.put(f"{book(customer)}/{address.pk}", got, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["label"] == "Work" and response.json()["is_default"] is True

    def test_put_needs_the_whole_address(self, api, customer):
        address = make_address(customer)
        body = assert_problem(
            api.put(f"{book(customer)}/{address.pk}", {"label": "x"}, format="json"), 400, "VALIDATION_ERROR"
        )
        assert {"type", "line1", "country"} <= set(body["errors"])

    def test_patch_changes_some_fields_and_revalidates(self, api, customer):
        address = make_address(customer)
        response = api.patch(
            f"{book(customer)}/{address.pk}", {"postal_code": "80331", "city": "München"}, format="json"
        )
        assert response.status_code == 200 and response.json()["city"] == "München"
        body = assert_problem(
            api.patch(f"{book(customer)}/{address.pk}", {"postal_code": "ABC"}, format="json"), 400, "VALIDATION_ERROR"
        )
        assert list(body["errors"]) == ["postal_code"]
        assert Address.objects.get(pk=address.pk).postal_code == "80331"

    def test_patch_of_an_unknown_address_is_404_before_400(self, api, customer):
        assert_problem(
            api.patch(f"{book(customer)}/{uuid.uuid4()}", {"postal_code": "ABC"}, format="json"),
            404,
            "ADDRESS_NOT_FOUND",
        )


class TestDeleteAndSetDefault:
    def test_delete_the_default_passes_it_on(self, api, customer):
        default = make_address(customer)
        other = make_address(customer, label="Other")
        assert api.delete(f"{book(customer)}/{default.pk}").status_code == 204
        assert api.get(f"{book(customer)}/{other.pk}").json()["is_default_shipping"] is True
        assert Address.objects.get(pk=default.pk).deleted_at is not None

    def test_set_default(self, api, customer):
        make_address(customer)
        other = make_address(customer, label="Other")
        response = api.post(f"{book(customer)}/{other.pk}/set-default")
        assert response.status_code == 200 and response.json()["is_default_shipping"] is True
        assert [a["label"] for a in api.get(book(customer)).json()["results"] if a["is_default"]] == ["Other"]

    def test_set_default_of_a_both_address_for_one_type(self, api, customer):
        make_address(customer, type="shipping")
        both = make_address(customer, type="both")  # the first billing address: billing default already
        make_address(customer, type="billing", make_default=True)
        response = api.post(f"{book(customer)}/{both.pk}/set-default", {"type": "billing"}, format="json")
        body = response.json()
        assert (body["is_default_shipping"], body["is_default_billing"]) == (False, True)
        body = api.post(f"{book(customer)}/{both.pk}/set-default", {"type": "both"}, format="json").json()
        assert (body["is_default_shipping"], body["is_default_billing"]) == (True, True)

    def test_set_default_for_a_type_the_address_does_not_serve(self, api, customer):
        shipping = make_address(customer, type="shipping")
        response = api.post(f"{book(customer)}/{shipping.pk}/set-default", {"type": "billing"}, format="json")
        assert "type" in assert_problem(response, 400, "VALIDATION_ERROR")["errors"]
        response = api.post(f"{book(customer)}/{shipping.pk}/set-default", {"kind": "billing"}, format="json")
        assert "kind" in assert_problem(response, 400, "VALIDATION_ERROR")["errors"]


class TestAuth:
    def test_no_token(self, client, customer):
        address = make_address(customer)
        assert_problem(client.get(book(customer)), 401, "NOT_AUTHENTICATED")
        assert_problem(client.delete(f"{book(customer)}/{address.pk}"), 401, "NOT_AUTHENTICATED")

    def test_a_read_token_cannot_write(self, api_client, customer):
        address = make_address(customer)
        reader = api_client([SCOPE_READ])
        assert reader.get(book(customer)).status_code == 200
        for response in [
            reader.post(book(customer), address_data(), format="json"),
            reader.patch(f"{book(customer)}/{address.pk}", {"label": "x"}, format="json"),
            reader.put(f"{book(customer)}/{address.pk}", address_data(), format="json"),
            reader.delete(f"{book(customer)}/{address.pk}"),
            reader.post(f"{book(customer)}/{address.pk}/set-default"),
        ]:
            assert_problem(response, 403, "PERMISSION_DENIED")
        assert Address.objects.get(pk=address.pk).deleted_at is None

    def test_a_customers_own_token_manages_its_own_book(self, api_client, customer):
        own = api_client(customer=customer)
        created = own.post(book(customer), address_data(), format="json")
        assert created.status_code == 201
        assert own.get(book(customer)).json()["results"][0]["id"] == created.json()["id"]


class TestBrokenObjectLevelAuthorization:
    """Customer A's token on every one of B's address routes: 404, and B's book is untouched."""

    @pytest.fixture
    def a_token(self, api_client, customer):
        return api_client(customer=customer)

    @pytest.mark.parametrize(
        ("method", "suffix", "payload"),
        [
            ("get", "", None),
            ("post", "", "address"),
            ("get", "/{id}", None),
            ("put", "/{id}", "address"),
            ("patch", "/{id}", {"label": "pwned"}),
            ("delete", "/{id}", None),
            ("post", "/{id}/set-default", {}),
        ],
    )
    def test_each_route_of_another_customer_is_not_found(
        self, a_token, customer, other_customer, method, suffix, payload
    ):
        theirs = make_address(other_customer)
        spare = make_address(other_customer, label="Spare")
        url = book(other_customer) + suffix.format(id=spare.pk)
        data = address_data() if payload == "address" else payload
        response = (
            getattr(a_token, method)(url, data, format="json") if data is not None else getattr(a_token, method)(url)
        )
        assert_problem(response, 404, "CUSTOMER_NOT_FOUND")
        assert Address.objects.filter(customer=other_customer, deleted_at__isnull=True).count() == 2
        assert Address.objects.get(pk=theirs.pk).is_default_shipping
        assert Address.objects.get(pk=spare.pk).label == "Spare"

    @pytest.mark.parametrize(
        ("method", "suffix", "payload"),
        [
            ("get", "", None),
            ("put", "", "address"),
            ("patch", "", {"label": "pwned"}),
            ("delete", "", None),
            ("post", "/set-default", {}),
        ],
    )
    def test_another_customers_address_under_ones_own_id_is_not_found(
        self, a_token, customer, other_customer, method, suffix, payload
    ):
        make_address(customer)
        theirs = make_address(other_customer)
        url = f"{book(customer)}/{theirs.pk}{suffix}"
        data = address_data() if payload == "address" else payload
        response = (
            getattr(a_token, method)(url, data, format="json") if data is not None else getattr(a_token, method)(url)
        )
        assert_problem(response, 404, "ADDRESS_NOT_FOUND")
        theirs.refresh_from_db()
        assert theirs.deleted_at is None and theirs.label == "Home"

    def test_a_service_token_reaching_another_customers_address_gets_address_not_found(
        self, api, customer, other_customer
    ):
        theirs = make_address(other_customer)
        assert_problem(api.delete(f"{book(customer)}/{theirs.pk}"), 404, "ADDRESS_NOT_FOUND")
        assert Address.objects.get(pk=theirs.pk).deleted_at is None


class TestCustomerRepresentation:
    def test_the_customer_shows_its_default_addresses(self, api, customer, django_capture_on_commit_callbacks):
        body = api.get(f"/api/v1/customers/{customer.pk}").json()
        assert body["default_shipping_address"] is None and body["default_billing_address"] is None
        with django_capture_on_commit_callbacks(execute=True):  # drops the cached representation
            shipping = make_address(customer, type="shipping")
            both = make_address(customer, type="both")
        body = api.get(f"/api/v1/customers/{customer.pk}").json()
        assert body["default_shipping_address"]["id"] == str(shipping.pk)
        assert body["default_billing_address"]["id"] == str(both.pk)
        assert body["default_billing_address"]["line1"] == "Unter den Linden 77"

    def test_the_customer_list_loads_defaults_in_one_query_per_field(self, api, customer, other_customer):
        def count_queries():
            with CaptureQueriesContext(connection) as captured:
                response = api.get("/api/v1/customers")
            assert response.status_code == 200
            return len(captured), response.json()["results"]

        make_address(customer, type="both")
        few, _ = count_queries()
        make_address(other_customer, type="both")
        for number in range(3):
            make_address(other_customer, label=f"#{number}")
        many, results = count_queries()
        assert few == many
        assert all(item["default_shipping_address"] is not None for item in results)
