"""The customer's IP address and user agent on consent records, whichever door the change came through.

A service calling on the customer's behalf (the storefront's server) passes them in
X-Customer-IP / X-Customer-User-Agent; a customer's own token records its own peer address.
"""

import pytest

from consent.models import ConsentRecord, ConsentStatus
from customers.actor import SCOPE_READ, SCOPE_WRITE
from tests.consent.conftest import state_of

pytestmark = pytest.mark.django_db

S = ConsentStatus
STOREFRONT_SERVER = "10.1.2.3"
CUSTOMER_IP = "203.0.113.7"
CUSTOMER_UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
ON_BEHALF = {"HTTP_X_CUSTOMER_IP": CUSTOMER_IP, "HTTP_X_CUSTOMER_USER_AGENT": CUSTOMER_UA}
SERVER = {"REMOTE_ADDR": STOREFRONT_SERVER, "HTTP_USER_AGENT": "storefront-backend/2.4"}


@pytest.fixture
def storefront(api_client):
    return api_client([SCOPE_READ, SCOPE_WRITE], subject="storefront")


def test_sign_up_through_the_storefront_records_the_customers_ip_and_user_agent(storefront):
    response = storefront.post(
        "/api/v1/customers",
        {"email": "ada@example.com", "preferences": {"communication": {"email": True}}},
        format="json",
        **SERVER,
        **ON_BEHALF,
    )
    assert response.status_code == 201, response.content
    records = ConsentRecord.objects.filter(customer_id=response.json()["id"], trigger="sign_up")
    assert records.count() == 8
    # Every sign-up record, the grant and the explicit not_requested ones, holds the customer's origin.
    assert set(records.values_list("ip_address", "user_agent")) == {(CUSTOMER_IP, CUSTOMER_UA)}
    assert records.get(purpose__code="marketing_email").status == S.GRANTED


def test_sign_up_without_the_headers_records_the_peer(storefront):
    response = storefront.post("/api/v1/customers", {"email": "bob@example.com"}, format="json", **SERVER)
    assert response.status_code == 201, response.content
    records = ConsentRecord.objects.filter(customer_id=response.json()["id"])
    assert set(records.values_list("ip_address", "user_agent")) == {(STOREFRONT_SERVER, "storefront-backend/2.4")}


def test_a_preference_change_on_the_customers_behalf_records_the_customer(storefront, customer):
    response = storefront.patch(
        f"/api/v1/customers/{customer.pk}/preferences",
        {"communication": {"sms": True}},
        format="json",
        **SERVER,
        **ON_BEHALF,
    )
    assert response.status_code == 200, response.content
    record = state_of(customer, "marketing_sms").last_record
    assert (record.ip_address, record.user_agent) == (CUSTOMER_IP, CUSTOMER_UA)


def test_a_consent_put_and_an_objection_on_the_customers_behalf_record_the_customer(storefront, customer):
    url = f"/api/v1/customers/{customer.pk}/consents"
    response = storefront.put(url + "/marketing_push", {"status": "granted"}, format="json", **SERVER, **ON_BEHALF)
    assert response.status_code == 200, response.content
    record = state_of(customer, "marketing_push").last_record
    assert (record.ip_address, record.user_agent) == (CUSTOMER_IP, CUSTOMER_UA)

    response = storefront.post(url + "/object-to-marketing", {}, format="json", **SERVER, **ON_BEHALF)
    assert response.status_code == 200, response.content
    objection = ConsentRecord.objects.filter(customer_id=customer.pk, trigger="objection")
    assert objection.exists()
    assert set(objection.values_list("ip_address", "user_agent")) == {(CUSTOMER_IP, CUSTOMER_UA)}


def test_a_customers_own_token_cannot_claim_another_address(api_client, customer):
    own = api_client([SCOPE_READ, SCOPE_WRITE], customer=customer)
    response = own.put(
        f"/api/v1/customers/{customer.pk}/consents/marketing_email",
        {"status": "granted"},
        format="json",
        REMOTE_ADDR="198.51.100.9",
        HTTP_USER_AGENT="Shop/3.1 (iPhone)",
        **ON_BEHALF,
    )
    assert response.status_code == 200, response.content
    record = state_of(customer, "marketing_email").last_record
    assert (record.ip_address, record.user_agent) == ("198.51.100.9", "Shop/3.1 (iPhone)")


def test_a_header_that_is_not_an_ip_address_records_no_ip_rather_than_the_servers(storefront, customer):
    response = storefront.put(
        f"/api/v1/customers/{customer.pk}/consents/marketing_email",
        {"status": "granted"},
        format="json",
        **SERVER,
        HTTP_X_CUSTOMER_IP="not-an-ip",
        HTTP_X_CUSTOMER_USER_AGENT=CUSTOMER_UA,
    )
    assert response.status_code == 200, response.content
    record = state_of(customer, "marketing_email").last_record
    assert (record.ip_address, record.user_agent) == (None, CUSTOMER_UA)


def test_the_schema_documents_the_headers_on_every_consent_recording_route():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]
    operations = [
        paths["/api/v1/customers"]["post"],
        paths["/api/v1/customers/{id}/preferences"]["put"],
        paths["/api/v1/customers/{id}/preferences"]["patch"],
        paths["/api/v1/customers/{customer_id}/consents/{purpose}"]["put"],
        paths["/api/v1/customers/{customer_id}/consents/object-to-marketing"]["post"],
    ]
    for operation in operations:
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert {"X-Customer-IP", "X-Customer-User-Agent"} <= headers, operation["operationId"]
