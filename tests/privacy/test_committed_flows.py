"""Flows that must work outside pytest's per-test transaction, as they do in production (ATOMIC_REQUESTS off)."""

import pytest

from customers.actor import SCOPE_READ, SCOPE_WRITE
from privacy.models import DataSubjectRequest, RequestStatus
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.parametrize("kind", ["access", "portability"])
def test_filing_an_export_through_the_api_commits_and_runs_the_export(api_client, export_dir, kind):
    customer = CustomerFactory(email="ann.lee@example.com")
    storefront = api_client([SCOPE_READ, SCOPE_WRITE], customer=customer)
    response = storefront.post(f"/api/v1/customers/{customer.pk}/privacy-requests", {"kind": kind}, format="json")
    assert response.status_code == 202, response.content
    request = DataSubjectRequest.objects.get(pk=response.json()["id"])
    # The export was queued on commit (eager Celery in tests) and ran to completion.
    assert request.status == RequestStatus.COMPLETED, request.status
    assert request.result_file and (export_dir / f"{customer.pk}-{request.pk}.json").exists()
    data = storefront.get(f"/api/v1/customers/{customer.pk}/data")
    assert data.status_code == 200 and data.json()["customer_id"] == str(customer.pk)


@pytest.mark.parametrize("kind", ["restriction", "objection"])
def test_filing_restriction_or_objection_through_the_api_completes(api_client, kind):
    customer = CustomerFactory(email="ann.lee@example.com")
    storefront = api_client([SCOPE_READ, SCOPE_WRITE], customer=customer)
    response = storefront.post(f"/api/v1/customers/{customer.pk}/privacy-requests", {"kind": kind}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "completed"
    request = DataSubjectRequest.objects.get(pk=response.json()["id"])
    assert request.status == RequestStatus.COMPLETED
    customer.refresh_from_db()
    if kind == "restriction":
        assert customer.processing_restricted
