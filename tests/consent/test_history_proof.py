"""GET …/consents/history: the personal proof fields (IP, user agent, staff reason) only for
customers:admin tokens and the customer's own token."""

import pytest

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from tests.consent.conftest import change

pytestmark = pytest.mark.django_db

PROOF = ("ip_address", "user_agent", "reason")


@pytest.fixture
def recorded(customer, rep_user):
    change(customer, "marketing_email", "granted", ip_address="203.0.113.7", user_agent="Firefox/128")
    change(
        customer,
        "marketing_sms",
        "granted",
        actor=Actor.for_staff(rep_user),
        source="call_center",
        reason="Asked on the phone by Ada Lovelace",
    )
    return customer


def _history(client, customer):
    response = client.get(f"/api/v1/customers/{customer.pk}/consents/history")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_a_read_token_sees_the_record_without_the_personal_proof(api_client, recorded):
    rows = _history(api_client([SCOPE_READ]), recorded)
    assert rows and all(row[name] is None for row in rows for name in PROOF)
    assert {row["purpose"] for row in rows} >= {"marketing_email", "marketing_sms"}  # the rest stays
    rows = _history(api_client([SCOPE_READ, SCOPE_WRITE]), recorded)
    assert all(row[name] is None for row in rows for name in PROOF)


def test_an_admin_token_sees_the_proof(api_client, recorded):
    rows = _history(api_client([SCOPE_READ, SCOPE_ADMIN]), recorded)
    by_purpose = {row["purpose"]: row for row in rows if row["trigger"] == "choice"}
    assert (by_purpose["marketing_email"]["ip_address"], by_purpose["marketing_email"]["user_agent"]) == (
        "203.0.113.7",
        "Firefox/128",
    )
    assert by_purpose["marketing_sms"]["reason"] == "Asked on the phone by Ada Lovelace"


def test_the_customers_own_token_sees_its_own_proof(api_client, recorded):
    rows = _history(api_client([SCOPE_READ], customer=recorded), recorded)
    email = next(row for row in rows if row["purpose"] == "marketing_email" and row["trigger"] == "choice")
    assert email["ip_address"] == "203.0.113.7"


def test_the_objection_answer_hides_the_proof_from_a_service_token(api_client, customer):
    change(customer, "marketing_email", "granted")
    response = api_client([SCOPE_READ, SCOPE_WRITE]).post(
        f"/api/v1/customers/{customer.pk}/consents/object-to-marketing",
        {},
        format="json",
        REMOTE_ADDR="198.51.100.2",
    )
    assert response.status_code == 200, response.content
    assert response.json()["changes"] and all(row["ip_address"] is None for row in response.json()["changes"])
