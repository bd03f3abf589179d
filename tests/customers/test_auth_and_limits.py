import time

import jwt
import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/customers"


def raw_token(**overrides):
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": "t",
        "exp": now + 60,
        "scope": "customers:read",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, overrides.pop("key", settings.JWT_SIGNING_KEY), algorithm="HS256")


def client_with(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


class TestAuthentication:
    def test_no_token(self):
        response = APIClient().get(URL)
        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["code"] == "NOT_AUTHENTICATED"
        assert response["WWW-Authenticate"].startswith("Bearer")

    @pytest.mark.parametrize(
        "header",
        [
            "Bearer not.a.jwt",
            "Token abc",
            "Bearer " + raw_token(exp=int(time.time()) - 3600),
            "Bearer " + raw_token(aud="someone-else"),
            "Bearer " + raw_token(iss="https://evil.example"),
            "Bearer " + raw_token(exp=None),
            "Bearer "
            + jwt.encode(
                {
                    "sub": "t",
                    "scope": "customers:read",
                    "exp": int(time.time()) + 60,
                    "iss": "https://auth.platform.local",
                    "aud": "customer-service",
                },
                "a-different-key-that-is-long-enough-32b",
                algorithm="HS256",
            ),
            "Bearer " + raw_token(customer_id="not-a-uuid"),
        ],
    )
    def test_bad_tokens_are_401(self, header):
        response = client_with(header).get(URL)
        assert response.status_code == 401, response.content
        assert response.json()["code"] == "NOT_AUTHENTICATED"

    def test_unsigned_token_is_refused(self):
        token = jwt.encode({"sub": "t", "scope": "customers:read"}, None, algorithm="none")
        assert client_with(f"Bearer {token}").get(URL).status_code == 401

    def test_a_token_that_verified_once_still_expires(self, monkeypatch):
        token = raw_token(exp=int(time.time()) + 30)
        assert client_with(f"Bearer {token}").get(URL).status_code == 200  # verified, and remembered
        later = time.time() + 30 + settings.JWT_LEEWAY_SECONDS
        monkeypatch.setattr(time, "time", lambda: later)
        response = client_with(f"Bearer {token}").get(URL)
        assert response.status_code == 401 and "expired" in response.json()["detail"]

    def test_a_rotated_signing_key_verifies_remembered_tokens_again(self):
        token = raw_token()
        assert client_with(f"Bearer {token}").get(URL).status_code == 200
        with override_settings(JWT_SIGNING_KEY="the-next-signing-key-at-least-32-bytes-long"):
            assert client_with(f"Bearer {token}").get(URL).status_code == 401


class TestScopes:
    def test_read_scope_cannot_write(self, api_client):
        reader = api_client([SCOPE_READ])
        assert reader.get(URL).status_code == 200
        response = reader.post(URL, {"email": "a@example.com"}, format="json")
        assert response.status_code == 403 and response.json()["code"] == "PERMISSION_DENIED"

    def test_write_scope_alone_cannot_read(self, api_client):
        assert api_client([SCOPE_WRITE]).get(URL).status_code == 403

    def test_every_route_needs_its_scope(self, api_client):
        customer = CustomerFactory(email="a@example.com")
        reader = api_client([SCOPE_READ])
        for method, path in [
            ("put", f"{URL}/{customer.pk}"),
            ("patch", f"{URL}/{customer.pk}"),
            ("delete", f"{URL}/{customer.pk}"),
            ("put", f"{URL}/{customer.pk}/preferences"),
            ("patch", f"{URL}/{customer.pk}/preferences"),
            ("post", f"{URL}/{customer.pk}/status"),
        ]:
            assert getattr(reader, method)(path, {}, format="json").status_code == 403, (method, path)


class TestOwnCustomerLimit:
    def test_token_for_a_sees_only_a_and_gets_404_for_b_on_every_route(self, api_client):
        a = CustomerFactory(email="a@example.com")
        b = CustomerFactory(email="b@example.com")
        own = api_client([SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN], customer=a)
        listed = own.get(URL).json()["results"]
        assert [c["id"] for c in listed] == [str(a.pk)]
        assert own.get(f"{URL}/{a.pk}").status_code == 200
        for method, path, body in [
            ("get", f"{URL}/{b.pk}", None),
            ("put", f"{URL}/{b.pk}", {"email": "x@example.com"}),
            ("patch", f"{URL}/{b.pk}", {"first_name": "x"}),
            ("delete", f"{URL}/{b.pk}", None),
            ("get", f"{URL}/{b.pk}/preferences", None),
            ("put", f"{URL}/{b.pk}/preferences", {"theme": "dark"}),
            ("patch", f"{URL}/{b.pk}/preferences", {"theme": "dark"}),
            ("post", f"{URL}/{b.pk}/status", {"status": "inactive", "reason": "x"}),
        ]:
            response = getattr(own, method)(path, body, format="json")
            assert response.status_code == 404, (method, path)
            assert response.json()["code"] == "CUSTOMER_NOT_FOUND"
        b.refresh_from_db()
        assert b.status == "active" and b.first_name != "x"

    def test_cached_b_is_not_served_to_a(self, api, api_client):
        a = CustomerFactory(email="a@example.com")
        b = CustomerFactory(email="b@example.com")
        assert api.get(f"{URL}/{b.pk}").status_code == 200  # b is now cached
        assert api_client([SCOPE_READ], customer=a).get(f"{URL}/{b.pk}").status_code == 404

    def test_customer_token_cannot_create_customers(self, api_client):
        a = CustomerFactory(email="a@example.com")
        response = api_client([SCOPE_READ, SCOPE_WRITE], customer=a).post(
            URL, {"email": "n@example.com"}, format="json"
        )
        assert response.status_code == 403


class TestRateLimit:
    @override_settings(API_RATE_LIMIT_PER_MINUTE=5)
    def test_request_over_the_limit_is_429_with_retry_after(self, api_client):
        client = api_client([SCOPE_READ], subject="busy-service")
        for _ in range(5):
            assert client.get(URL).status_code == 200
        response = client.get(URL)
        assert response.status_code == 429
        assert response.json()["code"] == "RATE_LIMITED"
        assert 1 <= int(response["Retry-After"]) <= 61
        # another subject has its own budget
        assert api_client([SCOPE_READ], subject="other-service").get(URL).status_code == 200

    @override_settings(API_RATE_LIMIT_PER_MINUTE=3)
    def test_get_by_id_counts_in_the_cache_round_trip_against_the_same_budget(self, api_client):
        customer = CustomerFactory()
        client = api_client([SCOPE_READ], subject="reader")
        assert client.get(URL).status_code == 200  # the list, counted by DRF's throttle
        assert [client.get(f"{URL}/{customer.pk}").status_code for _ in range(3)] == [200, 200, 429]
        response = client.get(f"{URL}/{customer.pk}")
        assert response.json()["code"] == "RATE_LIMITED" and 1 <= int(response["Retry-After"]) <= 61
        assert client.get(URL).status_code == 429  # one budget for both paths

    def test_get_by_id_counter_expires_with_its_window(self, api_client):
        from django_redis import get_redis_connection

        customer = CustomerFactory()
        client = api_client([SCOPE_READ], subject="expiring-reader")
        assert client.get(f"{URL}/{customer.pk}").status_code == 200  # a miss, then stored
        assert client.get(f"{URL}/{customer.pk}").status_code == 200  # a hit
        redis = get_redis_connection("default")
        keys = redis.keys(f"{settings.RATE_LIMIT_KEY_PREFIX}:expiring-reader:*")
        assert sum(int(redis.get(key)) for key in keys) == 2
        assert all(0 < redis.ttl(key) <= 65 for key in keys)

    @override_settings(API_RATE_LIMIT_PER_MINUTE=2)
    def test_a_customer_token_probing_other_ids_is_rate_limited_too(self, api_client):
        own, other = CustomerFactory(), CustomerFactory()
        client = api_client([SCOPE_READ], customer=own, subject="prober")
        statuses = [client.get(f"{URL}/{other.pk}").status_code for _ in range(3)]
        assert statuses == [404, 404, 429]

    @override_settings(API_RATE_LIMIT_PER_MINUTE=1, RATE_LIMIT_CACHE_ALIAS="unreachable")
    def test_get_by_id_fails_open_when_the_limit_store_is_down(self, api_client):
        customer = CustomerFactory()
        client = api_client([SCOPE_READ])
        assert [client.get(f"{URL}/{customer.pk}").status_code for _ in range(3)] == [200, 200, 200]

    def test_default_limit_is_1000_per_minute(self, api_client):
        from django_redis import get_redis_connection

        if time.time() % 60 > 57:  # keep the whole test inside one one-minute window
            time.sleep(60 - time.time() % 60 + 0.1)
        client = api_client([SCOPE_READ], subject="edge")
        assert client.get(URL).status_code == 200
        redis = get_redis_connection("default")
        (key,) = redis.keys(f"{settings.RATE_LIMIT_KEY_PREFIX}:edge:*")
        redis.set(key, 999)  # as if 999 requests were already counted in this window
        assert client.get(URL).status_code == 200  # the 1000th
        assert client.get(URL).status_code == 429  # the 1001st

    @override_settings(API_RATE_LIMIT_PER_MINUTE=1, RATE_LIMIT_CACHE_ALIAS="unreachable")
    def test_redis_down_fails_open(self, api_client):
        client = api_client([SCOPE_READ])
        assert [client.get(URL).status_code for _ in range(3)] == [200, 200, 200]


class TestHealth:
    def test_live_and_ready(self, client):
        assert client.get("/health/live").json() == {"status": "ok"}
        response = client.get("/health/ready")
        assert response.status_code == 200 and response.json()["checks"] == {"postgresql": True, "redis": True}

    def test_probes_need_no_token_and_answer_json_whatever_they_accept(self, client):
        for path in ("/health/live", "/health/ready"):
            response = client.get(path, HTTP_AUTHORIZATION="Bearer not.a.jwt", HTTP_ACCEPT="text/plain")
            assert response.status_code == 200, (path, response.content)
            assert response["Content-Type"] == "application/json" and response.json()["status"] == "ok"

    def test_ready_names_redis_when_it_is_down(self, client, settings):
        settings.CACHES = {**settings.CACHES, "default": settings.CACHES["unreachable"]}
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == ["redis"]

    def test_ready_names_postgresql_when_it_is_down(self, client, monkeypatch):
        from django.db import connection

        from customers import health

        # A real connection to a port where no PostgreSQL listens (refused at once).
        unreachable = connection.__class__({**connection.settings_dict, "PORT": "1"}, alias="unreachable")
        monkeypatch.setattr(health, "connection", unreachable)
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == ["postgresql"] and response.json()["checks"]["redis"] is True

    def test_reads_still_work_when_redis_is_down(self, api, settings):
        customer = CustomerFactory(email="a@example.com")
        settings.CACHES = {**settings.CACHES, "default": settings.CACHES["unreachable"]}
        response = api.get(f"{URL}/{customer.pk}")
        assert response.status_code == 200 and response.json()["email"] == "a@example.com"
