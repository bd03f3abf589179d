"""identity.user.deleted.v1 → customers records customer.erasure_requested.v1 → privacy files the erasure."""

import json

import pytest
from django.utils import timezone

from customers.actor import Actor
from customers.messaging import inbound
from customers.models import Customer, CustomerOrder, CustomerStatus, OrderStatus
from privacy import services
from privacy.models import DataSubjectRequest, ErasureLog, RequestKind, RequestStatus
from tests.events.conftest import envelope
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
STAFF = Actor.system("compliance-tests")


def identity_deleted(user_id: str):
    body = envelope("identity.user.deleted.v1", {"user_id": user_id}, source="identity")
    return inbound.apply_batch([inbound.parse(json.dumps(body), body["event_type"])])


def test_identity_deletion_files_one_erasure_request_that_compliance_approves(django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="gone@example.com", external_id="u-41")
    other = CustomerFactory(email="stays@example.com", external_id="u-42")
    assert identity_deleted("u-41").applied == 1
    request = DataSubjectRequest.objects.get(customer=customer)
    assert (request.kind, request.status) == (RequestKind.ERASURE, RequestStatus.RECEIVED)
    assert "identity.user.deleted" in request.notes

    assert identity_deleted("u-41").applied == 1  # a second deletion event (new event id): still one request
    assert DataSubjectRequest.objects.filter(customer=customer).count() == 1
    assert not DataSubjectRequest.objects.filter(customer=other).exists()

    with django_capture_on_commit_callbacks(execute=True):
        services.privacy_approve_erasure(actor=STAFF, request_id=request.pk)
    request.refresh_from_db()
    customer.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED and customer.status == CustomerStatus.ERASED
    assert ErasureLog.objects.filter(request=request, customer_id=customer.pk).exists()


def test_open_orders_put_the_filed_request_on_hold_and_approval_keeps_holding(django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="buyer@example.com", external_id="u-51")
    CustomerOrder.objects.create(
        order_id="O-51",
        customer=customer,
        status=OrderStatus.OPEN,
        total="10.00",
        currency="EUR",
        placed_at=timezone.now(),
        status_changed_at=timezone.now(),
    )
    identity_deleted("u-51")
    request = DataSubjectRequest.objects.get(customer=customer, kind=RequestKind.ERASURE)
    assert request.status == RequestStatus.ON_HOLD and "open orders" in request.status_reason
    with django_capture_on_commit_callbacks(execute=True):
        services.privacy_approve_erasure(actor=STAFF, request_id=request.pk)
    request.refresh_from_db()
    assert request.status == RequestStatus.ON_HOLD  # the hold check ran again in the job
    assert Customer.objects.get(pk=customer.pk).email == "buyer@example.com"


def test_an_already_open_erasure_request_is_reused():
    customer = CustomerFactory(email="gone@example.com", external_id="u-61")
    filed, _ = services.privacy_request_file(actor=STAFF, customer_id=customer.pk, kind="erasure")
    identity_deleted("u-61")
    assert list(DataSubjectRequest.objects.filter(customer=customer).values_list("pk", flat=True)) == [filed.pk]
