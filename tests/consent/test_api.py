"""The consent API: representation, writes, errors, scopes, pagination and BOLA on every route."""

import uuid

import pytest

from consent.models import ConsentRecord
from customers.actor import SCOPE_READ
from customers.models import CustomerPreferences
from tests.consent.conftest import MARKETING_PURPOSES, state_of

pytestmark = pytest.mark.django_db

UA = "Mozilla/5.0 (X11; Linux x86_64) Shop/1.0"


def url(customer, tail: str = "") -> str:
    return f"/api/v1/customers/{getattr(customer, 'pk', customer)}/consents{tail}"


def test_list_shows_every_purpose_with_version_and_dates(api, customer):
    response = api.get(url(customer))
    assert response.status_code == 200
    body = response.json()
    assert [row["purpose"] for row in body][:4] == list(MARKETING_PURPOSES)
    assert len(body) == 8
    row = body[0]
    assert set(row) == {
        "purpose",
        "purpose_name",
        "is_marketing",
        "status",
        "recorded",
        "policy_version",
        "source",
        "granted_at",
        "valid_until",
        "updated_at",
        "needs_renewal",
        "is_valid",
    }
    assert row["status"] == "not_requested" and row["recorded"] is True
    assert row["policy_version"]["version"] == "2025-01" and len(row["policy_version"]["text_hash"]) == 64


def test_put_grants_with_ip_and_user_agent_from_the_request(api, customer):
    response = api.put(
        url(customer, "/marketing_email"),
        {"status": "granted", "policy_version": "2025-01", "source": "mobile"},
        format="json",
        HTTP_USER_AGENT=UA,
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["purpose"], body["status"], body["source"], body["is_valid"]) == (
        "marketing_email",
        "granted",
        "mobile",
        True,
    )
    assert body["valid_until"] is not None
    record = state_of(customer, "marketing_email").last_record
    assert (record.ip_address, record.user_agent, record.actor) == ("198.51.100.7", UA, "token:tests")
    assert CustomerPreferences.objects.get(customer=customer).email_opt_in is True


def test_withdrawing_is_one_call_too(api, customer):
    api.put(url(customer, "/marketing_sms"), {"status": "granted"}, format="json")
    response = api.put(url(customer, "/marketing_sms"), {"status": "revoked"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert CustomerPreferences.objects.get(customer=customer).sms_opt_in is False


def test_a_client_may_put_back_what_it_got(api, customer):
    got = api.get(url(customer)).json()[0]
    got["status"] = "granted"
    got["policy_version"] = got["policy_version"]["version"]
    response = api.put(url(customer, "/marketing_email"), got, format="json")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/marketing_email", {"status": "revoked"}, 409, "CONSENT_TRANSITION_NOT_ALLOWED"),
        ("/marketing_email", {"status": "expired"}, 400, "VALIDATION_ERROR"),
        ("/marketing_email", {"status": "granted", "policy_version": "1999"}, 400, "POLICY_VERSION_NOT_FOUND"),
        ("/marketing_email", {"status": "granted", "source": "admin"}, 400, "VALIDATION_ERROR"),
        ("/marketing_email", {"status": "granted", "implicit": True}, 400, "IMPLICIT_CONSENT_NOT_ALLOWED"),
        ("/marketing_email", {"status": "granted", "colour": "blue"}, 400, "VALIDATION_ERROR"),
        ("/marketing_carrier_pigeon", {"status": "granted"}, 404, "PURPOSE_NOT_FOUND"),
    ],
)
def test_errors_are_problems_with_stable_codes(api, customer, path, body, status, code):
    before = ConsentRecord.objects.filter(customer_id=customer.pk).count()
    response = api.put(url(customer, path), body, format="json")
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert ConsentRecord.objects.filter(customer_id=customer.pk).count() == before


def test_history_is_paginated_newest_first_and_filterable(api, customer):
    for status in ("granted", "revoked", "granted", "revoked"):
        api.put(url(customer, "/marketing_push"), {"status": status}, format="json")
    first = api.get(url(customer, "/history"), {"page_size": 3}).json()
    assert len(first["results"]) == 3 and first["next"]
    seen, page = [], first
    while True:
        seen += [r["id"] for r in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    assert len(seen) == len(set(seen)) == 12  # 8 at sign-up + 4 changes, each exactly once
    newest = first["results"][0]
    assert (newest["purpose"], newest["status"], newest["previous_status"]) == ("marketing_push", "revoked", "granted")
    assert {"recorded_by", "ip_address", "user_agent", "policy_text_hash", "occurred_at", "source"} <= set(newest)

    only_push = api.get(url(customer, "/history"), {"purpose": "marketing_push", "status": "granted"}).json()
    assert [r["status"] for r in only_push["results"]] == ["granted", "granted"]


def test_object_to_marketing(api, customer):
    api.put(url(customer, "/marketing_email"), {"status": "granted"}, format="json")
    response = api.post(url(customer, "/object-to-marketing"), {"source": "email_link"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert {(c["purpose"], c["status"]) for c in body["changes"]} == {
        ("marketing_email", "revoked"),
        ("marketing_sms", "denied"),
        ("marketing_push", "denied"),
        ("marketing_direct_mail", "denied"),
    }
    assert {c["status"] for c in body["consents"] if c["is_marketing"]} <= {"revoked", "denied"}
    again = api.post(url(customer, "/object-to-marketing"), {}, format="json")
    assert again.status_code == 200 and again.json()["changes"] == []


def test_purposes_with_their_current_policy_versions(api):
    response = api.get("/api/v1/consent/purposes")
    assert response.status_code == 200
    purposes = {p["code"]: p for p in response.json()}
    assert set(purposes) == {
        "marketing_email",
        "marketing_sms",
        "marketing_push",
        "marketing_direct_mail",
        "analytics",
        "personalization",
        "third_party_sharing",
        "profiling",
    }
    email = purposes["marketing_email"]
    assert (email["is_marketing"], email["allows_implicit"], email["default_validity_months"]) == (True, False, 24)
    assert email["current_policy_version"]["notice_text"]
    assert not any(p["allows_implicit"] for p in purposes.values() if p["is_marketing"])


# ---------------------------------------------------------------- auth, scopes, BOLA

ROUTES = [
    ("get", "", None),
    ("put", "/marketing_email", {"status": "granted"}),
    ("get", "/history", None),
    ("post", "/object-to-marketing", {}),
]


@pytest.mark.parametrize(("method", "tail", "body"), ROUTES, ids=[f"{m} {t or '/'}" for m, t, _ in ROUTES])
def test_bola_a_customers_own_token_reaches_no_other_customer(api_client, customer, other_customer, method, tail, body):
    own = api_client(customer=customer)
    before = ConsentRecord.objects.filter(customer_id=other_customer.pk).count()
    response = getattr(own, method)(url(other_customer, tail), body, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "CUSTOMER_NOT_FOUND"
    assert ConsentRecord.objects.filter(customer_id=other_customer.pk).count() == before
    # ...and reaches its own.
    assert getattr(own, method)(url(customer, tail), body, format="json").status_code == 200


@pytest.mark.parametrize(("method", "tail", "body"), ROUTES, ids=[f"{m} {t or '/'}" for m, t, _ in ROUTES])
def test_an_unknown_customer_is_not_found(api, method, tail, body):
    response = getattr(api, method)(url(uuid.uuid4(), tail), body, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "CUSTOMER_NOT_FOUND"


@pytest.mark.parametrize(("method", "tail", "body"), ROUTES, ids=[f"{m} {t or '/'}" for m, t, _ in ROUTES])
def test_every_route_needs_a_token(client, customer, method, tail, body):
    response = getattr(client, method)(url(customer, tail), body, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["code"] == "NOT_AUTHENTICATED"


def test_purposes_need_a_token(client):
    assert client.get("/api/v1/consent/purposes").status_code == 401


@pytest.mark.parametrize(("method", "tail", "body"), ROUTES, ids=[f"{m} {t or '/'}" for m, t, _ in ROUTES])
def test_reads_need_read_and_writes_need_write(api_client, customer, method, tail, body):
    read_only = api_client([SCOPE_READ])
    response = getattr(read_only, method)(url(customer, tail), body, format="json")
    if method == "get":
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert response.json()["code"] == "PERMISSION_DENIED"
    write_only = api_client(["customers:write"])
    if method == "get":
        assert getattr(write_only, method)(url(customer, tail)).status_code == 403


def test_the_schema_documents_every_consent_route(api):
    from django.urls import include, path
    from drf_spectacular.generators import SchemaGenerator

    generator = SchemaGenerator(patterns=[path("api/v1/", include("consent.urls"))])
    schema = generator.get_schema(request=None, public=True)
    paths = schema["paths"]
    base = "/api/v1/customers/{customer_id}/consents"
    assert set(paths[base]) >= {"get"}
    assert "put" in paths[base + "/{purpose}"]
    assert "get" in paths[base + "/history"]
    assert "post" in paths[base + "/object-to-marketing"]
    assert "get" in paths["/api/v1/consent/purposes"]
    put = paths[base + "/{purpose}"]["put"]
    assert {"200", "400", "401", "403", "404", "409", "429"} <= set(put["responses"])
    assert "CONSENT_TRANSITION_NOT_ALLOWED" in put["responses"]["409"]["description"]
