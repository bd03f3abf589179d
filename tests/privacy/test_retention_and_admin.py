from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from addresses import services as address_services
from customers import activity
from customers.actor import Actor
from customers.models import Customer, CustomerOrder
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from privacy import retention, services, tasks
from privacy.models import DataSubjectRequest, ErasureLog
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
YEARS_AGO_4 = timezone.now() - timedelta(days=4 * 366)


def _age(customer, **fields):
    Customer.objects.filter(pk=customer.pk).update(**fields)


def _world():
    stale = [CustomerFactory(email=f"stale{n}@example.com") for n in range(3)]
    for customer in stale:
        _age(customer, registered_at=YEARS_AGO_4)
    recent_login = CustomerFactory(email="login@example.com")
    _age(recent_login, registered_at=YEARS_AGO_4, last_login_at=timezone.now() - timedelta(days=10))
    open_order = CustomerFactory(email="order@example.com")
    _age(open_order, registered_at=YEARS_AGO_4)
    CustomerOrder.objects.create(
        order_id="O-open",
        customer=open_order,
        total=1,
        currency="EUR",
        status="open",
        placed_at=YEARS_AGO_4,
        status_changed_at=YEARS_AGO_4,
    )
    fresh = CustomerFactory(email="fresh@example.com")
    address = address_services.address_create(
        actor=SYSTEM,
        customer_id=fresh.pk,
        line1="Unter den Linden 1",
        city="Berlin",
        postal_code="10117",
        country="DE",
        first_name="F",
        last_name="R",
    )
    address_services.address_delete(actor=SYSTEM, customer_id=fresh.pk, address_id=address.pk)
    address.__class__.objects.filter(pk=address.pk).update(deleted_at=timezone.now() - timedelta(days=200))
    old, _ = activity.activity_track(actor=SYSTEM, customer_id=fresh.pk, activity_type="page_view")
    old.__class__.objects.filter(pk=old.pk).update(occurred_at=timezone.now() - timedelta(days=30 * 30))
    activity.activity_track(actor=SYSTEM, customer_id=fresh.pk, activity_type="page_view")
    return stale, recent_login, open_order, fresh


def test_dry_run_reports_exactly_what_the_real_run_does():
    stale, recent_login, open_order, fresh = _world()
    dry = retention.apply_retention(actor=SYSTEM, dry_run=True)
    assert ErasureLog.objects.count() == 0
    assert Customer.objects.filter(status="erased").count() == 0
    assert dry["inactive_customers"] == 3 and dry["deleted_addresses"] == 1 and dry["old_activity"] == 1

    real = tasks.apply_retention(dry_run=False)
    assert real == dry
    assert set(Customer.objects.filter(status="erased").values_list("pk", flat=True)) == {c.pk for c in stale}
    for kept in (recent_login, open_order, fresh):
        kept.refresh_from_db()
        assert kept.status == "active"
    triggers = set(ErasureLog.objects.values_list("trigger", flat=True))
    assert {"retention:inactive_customers", "retention:deleted_addresses", "retention:old_activity"} <= triggers
    assert retention.apply_retention(actor=SYSTEM, dry_run=True)["inactive_customers"] == 0  # idempotent


def test_overdue_requests_are_counted():
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    assert tasks.report_overdue_requests() == 0
    DataSubjectRequest.objects.filter(pk=request.pk).update(due_at=timezone.now() - timedelta(days=1))
    assert tasks.report_overdue_requests() == 1


@pytest.fixture
def staff_in(django_user_model):
    def make(group):
        user = django_user_model.objects.create_user(group.replace(" ", "_").lower(), is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        return user

    return make


QUEUE = "/admin/privacy/datasubjectrequest/"


@pytest.mark.parametrize(
    "group, allowed", [(COMPLIANCE, True), (ADMINISTRATOR, True), (CUSTOMER_SERVICE, False), (MARKETING, False)]
)
def test_only_compliance_and_administrators_see_privacy(client, staff_in, group, allowed):
    customer = CustomerFactory(email="a@example.com")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="rectification")
    client.force_login(staff_in(group))
    expected = 200 if allowed else 403
    assert client.get(QUEUE).status_code == expected
    assert client.get(f"{QUEUE}{request.pk}/change/").status_code == expected
    assert client.get("/admin/privacy/erasurelog/").status_code == expected
    assert client.get(f"{QUEUE}retention-report/").status_code == expected


def test_queue_lists_overdue_first_and_actions_work(
    client, staff_in, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.PRIVACY_EXPORT_DIR = str(tmp_path)
    a = CustomerFactory(email="a@example.com")
    b = CustomerFactory(email="b@example.com")
    later, _ = services.privacy_request_file(actor=SYSTEM, customer_id=a.pk, kind="rectification")
    overdue, _ = services.privacy_request_file(actor=SYSTEM, customer_id=b.pk, kind="rectification")
    DataSubjectRequest.objects.filter(pk=overdue.pk).update(due_at=timezone.now() - timedelta(days=2))
    officer = staff_in(COMPLIANCE)
    client.force_login(officer)
    page = client.get(QUEUE)
    assert [r.pk for r in page.context["cl"].result_list] == [overdue.pk, later.pk]
    assert "overdue by" in page.content.decode()
    assert [r.pk for r in client.get(QUEUE, {"due": "overdue"}).context["cl"].result_list] == [overdue.pk]

    client.post(
        QUEUE,
        {
            "action": "extend_deadline",
            "_selected_action": [str(later.pk)],
            "apply": "1",
            "reason": "needs records from the warehouse",
            "months": "1",
        },
    )
    later.refresh_from_db()
    assert later.extension_months == 1 and later.extension_reason == "needs records from the warehouse"
    client.post(QUEUE, {"action": "reject", "_selected_action": [str(overdue.pk)], "apply": "1", "reason": "no id"})
    overdue.refresh_from_db()
    assert overdue.status == "rejected" and overdue.handled_by == officer

    export, _ = services.privacy_request_file(actor=SYSTEM, customer_id=a.pk, kind="access")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(QUEUE, {"action": "start_export", "_selected_action": [str(export.pk)]})
    export.refresh_from_db()
    assert export.status == "completed"
    download = client.get(f"{QUEUE}{export.pk}/download/")
    assert download.status_code == 200
    assert b'"customer-data-export"' in b"".join(download.streaming_content)
    assert "attachment" in download["Content-Disposition"]


class TestRetentionConsultsTheHoldHooks:
    HOLDS = "tests.privacy.holds_for_tests"

    def test_without_hold_checks_an_open_order_does_not_keep_the_customer(self, settings):
        settings.PRIVACY_ERASURE_HOLD_CHECKS = []
        _, _, open_order, _ = _world()
        dry = retention.apply_retention(actor=SYSTEM, dry_run=True)
        assert dry["inactive_customers"] == 4
        assert retention.apply_retention(actor=SYSTEM)["inactive_customers"] == 4
        open_order.refresh_from_db()
        assert open_order.status == "erased"

    def test_set_based_and_per_customer_checks_both_hold(self, settings, monkeypatch):
        settings.PRIVACY_ERASURE_HOLD_CHECKS = [
            "privacy.holds.open_orders",
            f"{self.HOLDS}.legal_hold",
            f"{self.HOLDS}.vip_hold",
        ]
        monkeypatch.setattr(retention, "BATCH_SIZE", 2)  # several batches, held ones among them
        stale, _, open_order, _ = _world()
        Customer.objects.filter(pk=stale[0].pk).update(tags=["legal-hold"])
        Customer.objects.filter(pk=stale[1].pk).update(tags=["vip-hold"])
        dry = retention.apply_retention(actor=SYSTEM, dry_run=True)
        assert dry["inactive_customers"] == 1
        assert retention.apply_retention(actor=SYSTEM)["inactive_customers"] == 1
        people = [*stale, open_order]
        statuses = dict(Customer.objects.filter(pk__in=[c.pk for c in people]).values_list("pk", "status"))
        assert [statuses[c.pk] for c in people] == ["active", "active", "erased", "active"]
