"""Lifting a processing restriction (Art. 18(3)): through the admin and through the API, always recorded."""

import pytest
from django.contrib.auth.models import Group

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from customers.roles import COMPLIANCE, CUSTOMER_SERVICE
from privacy import services
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
QUEUE = "/admin/privacy/datasubjectrequest/"


def restricted_customer(email="r@example.com"):
    customer = CustomerFactory(email=email)
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="restriction")
    customer.refresh_from_db()
    assert customer.processing_restricted
    return customer, request


def staff(django_user_model, group):
    user = django_user_model.objects.create_user(group.replace(" ", "_").lower(), is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_compliance_lifts_a_restriction_from_the_queue_with_a_reason(client, django_user_model):
    customer, request = restricted_customer()
    officer = staff(django_user_model, COMPLIANCE)
    client.force_login(officer)
    form = client.post(QUEUE, {"action": "lift_restriction", "_selected_action": [str(request.pk)]})
    assert form.status_code == 200 and b"reason" in form.content  # asks for the reason first
    customer.refresh_from_db()
    assert customer.processing_restricted
    client.post(
        QUEUE,
        {
            "action": "lift_restriction",
            "_selected_action": [str(request.pk)],
            "apply": "1",
            "reason": "dispute settled",
        },
    )
    customer.refresh_from_db()
    assert not customer.processing_restricted
    assert customer.history.latest("history_date").history_change_reason == "restriction lifted: dispute settled"
    request.refresh_from_db()
    assert request.history.latest("history_date").history_change_reason == "restriction lifted: dispute settled"
    assert request.handled_by == officer


def test_customer_service_cannot_lift_from_the_queue(client, django_user_model):
    customer, request = restricted_customer()
    client.force_login(staff(django_user_model, CUSTOMER_SERVICE))
    response = client.post(
        QUEUE, {"action": "lift_restriction", "_selected_action": [str(request.pk)], "apply": "1", "reason": "x"}
    )
    assert response.status_code == 403
    customer.refresh_from_db()
    assert customer.processing_restricted


def test_api_lifts_for_the_own_token_or_an_admin(api_client):
    customer, _ = restricted_customer()
    other, _ = restricted_customer("o@example.com")
    path = f"/api/v1/customers/{customer.pk}/restriction/lift"
    own = api_client([SCOPE_READ, SCOPE_WRITE], customer=customer)
    assert own.post(path, {}, format="json").status_code == 400  # a reason is required
    response = own.post(path, {"reason": "I withdraw my dispute"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"customer_id": str(customer.pk), "processing_restricted": False}
    customer.refresh_from_db()
    assert not customer.processing_restricted
    again = own.post(path, {"reason": "again"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "NOT_RESTRICTED"

    other_path = f"/api/v1/customers/{other.pk}/restriction/lift"
    assert own.post(other_path, {"reason": "x"}, format="json").status_code == 404  # not the own customer
    assert api_client([SCOPE_READ]).post(other_path, {"reason": "x"}, format="json").status_code == 403
    assert api_client([SCOPE_READ, SCOPE_WRITE]).post(other_path, {"reason": "x"}, format="json").status_code == 403
    admin = api_client([SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN])
    assert admin.post(other_path, {"reason": "court order ended"}, format="json").status_code == 200
    other.refresh_from_db()
    assert not other.processing_restricted
