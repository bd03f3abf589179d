from datetime import UTC, datetime

import pytest

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from customers.errors import ApplicationError
from privacy import services
from privacy.models import DataSubjectRequest, RequestStatus
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@pytest.mark.parametrize(
    "received, extension, due",
    [
        ("2027-01-31", 0, "2027-02-28"),
        ("2028-01-31", 0, "2028-02-29"),  # leap year
        ("2027-03-31", 0, "2027-04-30"),
        ("2027-01-15", 0, "2027-02-15"),
        ("2027-12-10", 0, "2028-01-10"),
        ("2027-01-31", 2, "2027-04-30"),
        ("2027-11-30", 1, "2028-01-30"),
    ],
)
def test_due_date_is_same_day_next_month_clamped(received, extension, due):
    received_at = datetime.fromisoformat(received).replace(hour=9, tzinfo=UTC)
    assert services.due_date(received_at, extension).date().isoformat() == due


def test_filing_twice_returns_the_open_request():
    customer = CustomerFactory(email="a@example.com")
    first, created = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    again, created_again = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    assert created and not created_again and again.pk == first.pk
    assert DataSubjectRequest.objects.count() == 1
    assert first.due_at == services.due_date(first.received_at)
    assert first.filed_by == "system:tests"


def test_a_closed_request_does_not_block_a_new_one():
    customer = CustomerFactory(email="a@example.com")
    first, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    services.privacy_request_transition(actor=SYSTEM, request_id=first.pk, to="rejected", reason="duplicate by mail")
    second, created = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    assert created and second.pk != first.pk


def test_status_paths_and_refused_moves():
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    for to in ["verifying", "on_hold", "in_progress", "completed"]:
        services.privacy_request_transition(actor=SYSTEM, request_id=request.pk, to=to, reason="because")
    request.refresh_from_db()
    assert request.status == "completed" and request.completed_at is not None
    for to in ["in_progress", "received", "rejected", "on_hold"]:
        with pytest.raises(ApplicationError) as error:
            services.privacy_request_transition(actor=SYSTEM, request_id=request.pk, to=to, reason="x")
        assert error.value.code == "PRIVACY_REQUEST_TRANSITION_NOT_ALLOWED"
    statuses = [h.status for h in request.history.order_by("history_date")]
    assert statuses == ["received", "verifying", "on_hold", "in_progress", "completed"]


def test_hold_and_reject_need_a_reason():
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    for to in ["on_hold", "rejected"]:
        with pytest.raises(ApplicationError) as error:
            services.privacy_request_transition(actor=SYSTEM, request_id=request.pk, to=to, reason="  ")
        assert error.value.code == "VALIDATION_ERROR"
    services.privacy_request_transition(actor=SYSTEM, request_id=request.pk, to="rejected", reason="not the holder")
    request.refresh_from_db()
    assert request.status_reason == "not the holder"


def test_extension_up_to_two_months_with_reason():
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    with pytest.raises(ApplicationError):
        services.privacy_request_extend(actor=SYSTEM, request_id=request.pk, months=1, reason="")
    services.privacy_request_extend(actor=SYSTEM, request_id=request.pk, months=1, reason="complex request")
    services.privacy_request_extend(actor=SYSTEM, request_id=request.pk, months=1, reason="many systems")
    with pytest.raises(ApplicationError) as error:
        services.privacy_request_extend(actor=SYSTEM, request_id=request.pk, months=1, reason="more")
    assert error.value.code == "EXTENSION_NOT_ALLOWED"
    request.refresh_from_db()
    assert request.extension_months == 2
    assert request.due_at == services.due_date(request.received_at, 2)
    assert request.extension_reason == "complex request\nmany systems"


def test_restriction_request_applies_at_once_and_lifting_is_recorded():
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="restriction")
    request.refresh_from_db()
    customer.refresh_from_db()
    assert request.status == "completed" and customer.processing_restricted
    services.privacy_lift_restriction(actor=SYSTEM, customer_id=customer.pk, reason="dispute resolved")
    customer.refresh_from_db()
    assert not customer.processing_restricted
    reasons = list(customer.history.order_by("history_date").values_list("history_change_reason", flat=True))
    assert reasons[-2].startswith("restricted:") and reasons[-1] == "restriction lifted: dispute resolved"


class TestApi:
    def test_own_token_files_and_follows_its_requests(self, api_client):
        a = CustomerFactory(email="a@example.com")
        own = api_client([SCOPE_READ, SCOPE_WRITE], customer=a)
        response = own.post(f"/api/v1/customers/{a.pk}/privacy-requests", {"kind": "rectification"}, format="json")
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["status"] == "received" and body["kind"] == "rectification"
        again = own.post(f"/api/v1/customers/{a.pk}/privacy-requests", {"kind": "rectification"}, format="json")
        assert again.status_code == 200 and again.json()["id"] == body["id"]
        assert [r["id"] for r in own.get(f"/api/v1/customers/{a.pk}/privacy-requests").json()] == [body["id"]]
        assert own.get(f"/api/v1/privacy-requests/{body['id']}").status_code == 200

    def test_bola_and_admin_scope(self, api_client):
        a = CustomerFactory(email="a@example.com")
        b = CustomerFactory(email="b@example.com")
        b_request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=b.pk, kind="rectification")
        own_a = api_client([SCOPE_READ, SCOPE_WRITE], customer=a)
        for method, path, body in [
            ("post", f"/api/v1/customers/{b.pk}/privacy-requests", {"kind": "access"}),
            ("get", f"/api/v1/customers/{b.pk}/privacy-requests", None),
            ("get", f"/api/v1/customers/{b.pk}/data", None),
            ("delete", f"/api/v1/customers/{b.pk}/data", None),
            ("post", f"/api/v1/customers/{b.pk}/erasure", None),
        ]:
            response = getattr(own_a, method)(path, body, format="json")
            assert response.status_code == 404, (method, path, response.content)
        response = own_a.get(f"/api/v1/privacy-requests/{b_request.pk}")
        assert response.status_code == 404 and response.json()["code"] == "PRIVACY_REQUEST_NOT_FOUND"

        service = api_client([SCOPE_READ, SCOPE_WRITE])
        assert service.get(f"/api/v1/customers/{b.pk}/privacy-requests").status_code == 403
        assert service.post(f"/api/v1/customers/{b.pk}/erasure").status_code == 403
        assert service.get(f"/api/v1/privacy-requests/{b_request.pk}").status_code == 403
        admin = api_client([SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN])
        assert admin.get(f"/api/v1/customers/{b.pk}/privacy-requests").status_code == 200
        assert admin.post(f"/api/v1/customers/{b.pk}/erasure").status_code == 202
        assert DataSubjectRequest.objects.filter(customer=b, kind="erasure", status=RequestStatus.RECEIVED).exists()

    def test_no_export_yet_is_404(self, api_client):
        a = CustomerFactory(email="a@example.com")
        response = api_client([SCOPE_READ], customer=a).get(f"/api/v1/customers/{a.pk}/data")
        assert response.status_code == 404 and response.json()["code"] == "EXPORT_NOT_FOUND"


class TestStorefrontToken:
    """A storefront (service) token without a customer_id claim, with customers:write."""

    @pytest.mark.parametrize("kind", ["access", "portability"])
    def test_files_export_requests(self, api_client, kind, django_capture_on_commit_callbacks, settings, tmp_path):
        settings.PRIVACY_EXPORT_DIR = str(tmp_path)
        customer = CustomerFactory(email="a@example.com")
        storefront = api_client([SCOPE_READ, SCOPE_WRITE], subject="storefront")
        with django_capture_on_commit_callbacks(execute=True):
            response = storefront.post(
                f"/api/v1/customers/{customer.pk}/privacy-requests", {"kind": kind}, format="json"
            )
        assert response.status_code == 202, response.content
        assert response.json()["kind"] == kind
        request = DataSubjectRequest.objects.get(pk=response.json()["id"])
        assert request.filed_by == "token:storefront" and request.status == RequestStatus.COMPLETED

    def test_still_needs_admin_for_erasure_listing_and_reading(self, api_client):
        customer = CustomerFactory(email="a@example.com")
        storefront = api_client([SCOPE_READ, SCOPE_WRITE], subject="storefront")
        base = f"/api/v1/customers/{customer.pk}"
        for response in [
            storefront.post(f"{base}/privacy-requests", {"kind": "erasure"}, format="json"),
            storefront.delete(f"{base}/data"),
            storefront.post(f"{base}/erasure"),
            storefront.get(f"{base}/privacy-requests"),
            storefront.get(f"{base}/data"),
        ]:
            assert response.status_code == 403 and response.json()["code"] == "PERMISSION_DENIED"
        assert not DataSubjectRequest.objects.filter(kind="erasure").exists()

    def test_read_scope_alone_cannot_file(self, api_client):
        customer = CustomerFactory(email="a@example.com")
        reader = api_client([SCOPE_READ], subject="storefront")
        response = reader.post(f"/api/v1/customers/{customer.pk}/privacy-requests", {"kind": "access"}, format="json")
        assert response.status_code == 403
        assert not DataSubjectRequest.objects.exists()

    def test_unknown_customer_is_404(self, api_client):
        storefront = api_client([SCOPE_READ, SCOPE_WRITE], subject="storefront")
        response = storefront.post(
            "/api/v1/customers/00000000-0000-4000-8000-000000000000/privacy-requests", {"kind": "access"}, format="json"
        )
        assert response.status_code == 404 and response.json()["code"] == "CUSTOMER_NOT_FOUND"
