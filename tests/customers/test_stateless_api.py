"""The API and the probes run without sessions, cookie sign-in or flash messages; the back office keeps them."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from customers.middleware import BackOfficeAuthenticationMiddleware
from customers.roles import CUSTOMER_SERVICE
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_a_signed_in_staff_session_does_not_authenticate_the_api(staff):
    client = Client()
    client.force_login(staff(CUSTOMER_SERVICE))
    assert client.get("/admin/").status_code == 200  # the session signs the rep in to the back office

    response = client.get("/api/v1/customers")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")


def test_api_responses_set_no_cookie_and_do_not_vary_on_it(api):
    customer = CustomerFactory()
    for path in (f"/api/v1/customers/{customer.pk}", "/api/v1/customers", "/health/live"):
        response = api.get(path)
        assert response.status_code == 200, path
        assert not response.cookies, path
        assert "Cookie" not in response.get("Vary", ""), path


def test_the_back_office_keeps_its_session_and_csrf(staff, client):
    user = staff(CUSTOMER_SERVICE)
    user.set_password("a-long-pass-phrase")
    user.save()
    csrf_client = Client(enforce_csrf_checks=True)
    page = csrf_client.get("/admin/login/")
    token = page.cookies["csrftoken"].value
    refused = csrf_client.post("/admin/login/", {"username": user.username, "password": "a-long-pass-phrase"})
    assert refused.status_code == 403  # no CSRF token: refused
    signed_in = csrf_client.post(
        "/admin/login/",
        {"username": user.username, "password": "a-long-pass-phrase", "csrfmiddlewaretoken": token},
    )
    assert signed_in.status_code == 302 and "sessionid" in signed_in.cookies
    assert csrf_client.get("/admin/").status_code == 200


def test_the_authentication_middleware_still_signs_in_back_office_requests(rf):
    seen = {}

    def view(request):
        seen["user"] = getattr(request, "user", None)
        return None

    middleware = BackOfficeAuthenticationMiddleware(view)
    for path, expected in (("/admin/", AnonymousUser), ("/api/v1/customers", type(None))):
        request = rf.get(path)
        request.session = {}
        middleware(request)
        assert isinstance(seen["user"], expected), path
