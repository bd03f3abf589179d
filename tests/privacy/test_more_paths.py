"""Paths the audit found untested: objection, the 7-day filter, 202 while running, DELETE /data, admin
approve/hold, export purge after K days, and a second real erase pass."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from addresses import services as address_services
from consent import selectors as consent_selectors
from customers import activity, notes
from customers.actor import SCOPE_READ, SCOPE_WRITE, Actor
from customers.models import Customer
from privacy import retention, services
from privacy.models import DataSubjectRequest, ErasureLog, RequestStatus
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
QUEUE = "/admin/privacy/datasubjectrequest/"


def test_an_objection_request_ends_direct_marketing_through_consent():
    customer = CustomerFactory(email="o@example.com")
    from consent import services as consent_services

    consent_services.consent_change(
        actor=SYSTEM, customer_id=customer.pk, purpose_code="marketing_email", status="granted", source="web"
    )
    assert consent_selectors.customer_consents_to(customer_id=customer.pk, purpose="marketing_email")
    request, created = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="objection")
    request.refresh_from_db()
    assert created and request.status == RequestStatus.COMPLETED
    assert not consent_selectors.customer_consents_to(customer_id=customer.pk, purpose="marketing_email")
    record = customer.consent_records.filter(purpose__code="marketing_email").latest("occurred_at")
    assert record.status == "revoked" and str(request.pk) in record.reason
    statuses = [h.status for h in request.history.order_by("history_date")]
    assert statuses == ["received", "in_progress", "completed"]


def test_the_due_within_seven_days_filter(client, officer):
    now = timezone.now()
    made = {}
    for name, days, status in [
        ("in_3_days", 3, "received"),
        ("in_10_days", 10, "received"),
        ("overdue", -1, "received"),
        ("closed_in_3_days", 3, "completed"),
        ("in_6_days_on_hold", 6, "on_hold"),
    ]:
        customer = CustomerFactory(email=f"{name}@example.com")
        made[name] = DataSubjectRequest.objects.create(
            customer=customer, kind="rectification", status=status, due_at=now + timedelta(days=days), filed_by="t"
        )
    listed = client.get(QUEUE, {"due": "week"}).context["cl"].result_list
    assert {r.pk for r in listed} == {made["in_3_days"].pk, made["in_6_days_on_hold"].pk}


def test_data_is_202_while_the_export_runs(api_client, export_dir):
    customer = CustomerFactory(email="a@example.com")
    own = api_client([SCOPE_READ, SCOPE_WRITE], customer=customer)
    filed = own.post(f"/api/v1/customers/{customer.pk}/privacy-requests", {"kind": "access"}, format="json")
    assert filed.status_code == 202  # the job waits for the commit (never comes in this test)
    response = own.get(f"/api/v1/customers/{customer.pk}/data")
    assert response.status_code == 202
    assert response.json()["id"] == filed.json()["id"] and response.json()["status"] == "in_progress"


def test_delete_data_files_an_erasure_request(api_client):
    customer = CustomerFactory(email="a@example.com")
    own = api_client([SCOPE_READ, SCOPE_WRITE], customer=customer)
    response = own.delete(f"/api/v1/customers/{customer.pk}/data")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["kind"] == "erasure" and body["status"] == "received" and body["customer_id"] == str(customer.pk)
    again = own.delete(f"/api/v1/customers/{customer.pk}/data")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    customer.refresh_from_db()
    assert customer.status == "active"  # waits for compliance approval


def test_admin_approves_an_erasure_and_puts_another_on_hold(client, officer, django_capture_on_commit_callbacks):
    erase_me = CustomerFactory(email="erase@example.com")
    hold_me = CustomerFactory(email="hold@example.com")
    erasure, _ = services.privacy_request_file(actor=SYSTEM, customer_id=erase_me.pk, kind="erasure")
    held, _ = services.privacy_request_file(actor=SYSTEM, customer_id=hold_me.pk, kind="erasure")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(QUEUE, {"action": "approve_erasure", "_selected_action": [str(erasure.pk)]})
    erasure.refresh_from_db()
    erase_me.refresh_from_db()
    assert erasure.status == "completed" and erasure.handled_by == officer
    assert erase_me.status == "erased" and ErasureLog.objects.filter(request=erasure).exists()

    client.post(
        QUEUE,
        {"action": "put_on_hold", "_selected_action": [str(held.pk)], "apply": "1", "reason": "court case pending"},
    )
    held.refresh_from_db()
    hold_me.refresh_from_db()
    assert held.status == "on_hold" and held.status_reason == "court case pending" and held.handled_by == officer
    assert hold_me.status == "active"


def test_approving_needs_the_approve_permission(client, django_user_model):
    from customers.roles import CUSTOMER_SERVICE

    customer = CustomerFactory(email="e@example.com")
    erasure, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="erasure")
    rep = django_user_model.objects.create_user("rep", is_staff=True)
    rep.groups.add(Group.objects.get(name=CUSTOMER_SERVICE))
    client.force_login(rep)
    response = client.post(QUEUE, {"action": "approve_erasure", "_selected_action": [str(erasure.pk)]})
    assert response.status_code == 403
    erasure.refresh_from_db()
    assert erasure.status == "received"


def test_exports_are_purged_after_k_days(settings, export_dir, django_capture_on_commit_callbacks):
    settings.PRIVACY_RETENTION = {**settings.PRIVACY_RETENTION, "export_days": 3}
    old_customer = CustomerFactory(email="old@example.com")
    new_customer = CustomerFactory(email="new@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        old, _ = services.privacy_request_file(actor=SYSTEM, customer_id=old_customer.pk, kind="access")
        new, _ = services.privacy_request_file(actor=SYSTEM, customer_id=new_customer.pk, kind="access")
    old.refresh_from_db()
    new.refresh_from_db()
    assert abs(old.result_expires_at - (timezone.now() + timedelta(days=3))) < timedelta(minutes=1)
    # Four days later for the old one (its expiry passed), one day later for the new one.
    DataSubjectRequest.objects.filter(pk=old.pk).update(result_expires_at=timezone.now() - timedelta(days=1))
    assert retention.apply_retention(actor=SYSTEM, dry_run=True)["expired_exports"] == 1
    assert Path(old.result_file).exists()
    with django_capture_on_commit_callbacks(execute=True):
        counts = retention.apply_retention(actor=SYSTEM)
    assert counts["expired_exports"] == 1
    assert not Path(old.result_file).exists() and Path(new.result_file).exists()
    old.refresh_from_db()
    assert old.result_file == ""
    assert ErasureLog.objects.filter(trigger="retention:expired_exports").exists()


def _snapshot(exclude_tables=("privacy_erasurelog", "django_session")) -> dict:
    """Every row of every table, as text (the test database is small)."""
    snapshot = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        for (table,) in cursor.fetchall():
            if table in exclude_tables:
                continue
            cursor.execute(f'SELECT to_jsonb(t)::text FROM "{table}" AS t')
            snapshot[table] = sorted(row[0] for row in cursor.fetchall())
    return snapshot


def test_a_second_real_erase_pass_changes_nothing(django_capture_on_commit_callbacks):
    customer = CustomerFactory(email="twice@example.com", first_name="Twice", phone="+14155550123")
    address_services.address_create(
        actor=SYSTEM,
        customer_id=customer.pk,
        line1="Somewhere 1",
        city="Berlin",
        postal_code="10117",
        country="DE",
        first_name="T",
        last_name="W",
    )
    activity.activity_track(actor=SYSTEM, customer_id=customer.pk, activity_type="page_view", summary="x")
    notes.note_create(actor=SYSTEM, customer_id=customer.pk, text="a note")
    with django_capture_on_commit_callbacks(execute=True):
        services.erase_customers(actor=SYSTEM, customer_ids=[customer.pk], trigger="test")
    before = _snapshot()
    events_before = set(before["customers_outboxevent"])
    with django_capture_on_commit_callbacks(execute=True):
        services.erase_customers(actor=SYSTEM, customer_ids=[customer.pk], trigger="test")  # the real work again
    after = _snapshot()
    new_events = [json.loads(row) for row in set(after.pop("customers_outboxevent")) - events_before]
    before.pop("customers_outboxevent")
    assert [event["event_type"] for event in new_events] == ["customer.erased.v1"]  # told again, nothing else
    assert {table: rows for table, rows in after.items() if rows != before[table]} == {}
    assert Customer.objects.get(pk=customer.pk).status == "erased"
