"""GDPR Art. 21(3): one call ends all direct marketing."""

import pytest

from consent import selectors, services
from consent.models import ConsentRecord, ConsentStatus
from customers.models import CustomerPreferences, OutboxEvent
from tests.consent.conftest import MARKETING_PURPOSES, TOKEN, change, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus


@pytest.fixture
def marketed_customer():
    customer = CustomerFactory(preferences={"email_opt_in": True, "sms_opt_in": True})
    change(customer, "marketing_push", S.PENDING)
    change(customer, "analytics", S.GRANTED)
    return customer


def test_one_call_revokes_every_granted_marketing_purpose_and_refuses_the_rest(marketed_customer):
    customer = marketed_customer
    records = services.consent_object_to_marketing(
        actor=TOKEN, customer_id=customer.pk, source="email_link", ip_address="192.0.2.1", user_agent="Mail/1"
    )
    assert {(r.purpose.code, r.previous_status, r.status) for r in records} == {
        ("marketing_email", S.GRANTED, S.REVOKED),
        ("marketing_sms", S.GRANTED, S.REVOKED),
        ("marketing_push", S.PENDING, S.DENIED),
        ("marketing_direct_mail", S.NOT_REQUESTED, S.DENIED),
    }
    assert all(r.trigger == "objection" and r.source == "email_link" and r.ip_address == "192.0.2.1" for r in records)
    for code in MARKETING_PURPOSES:
        assert state_of(customer, code).status in (S.REVOKED, S.DENIED)
        assert not selectors.customers_consenting_to(code).filter(pk=customer.pk).exists()
    # Not marketing: untouched.
    assert state_of(customer, "analytics").status == S.GRANTED
    prefs = CustomerPreferences.objects.get(customer=customer)
    assert not any([prefs.email_opt_in, prefs.sms_opt_in, prefs.push_opt_in, prefs.direct_mail_opt_in])
    assert prefs.analytics_tracking is True


def test_the_objection_is_published_with_its_reason(marketed_customer):
    services.consent_object_to_marketing(actor=TOKEN, customer_id=marketed_customer.pk, source="web")
    revoked = OutboxEvent.objects.filter(subject=str(marketed_customer.pk), event_type="customer.consent.revoked.v1")
    denied = OutboxEvent.objects.filter(subject=str(marketed_customer.pk), event_type="customer.consent.denied.v1")
    assert {e.data["purpose"] for e in revoked} == {"marketing_email", "marketing_sms"}
    assert {e.data["reason"] for e in revoked} == {"objection"}
    assert {e.data["reason"] for e in denied} == {"objection"}


def test_a_second_objection_changes_nothing(marketed_customer):
    services.consent_object_to_marketing(actor=TOKEN, customer_id=marketed_customer.pk, source="web")
    count = ConsentRecord.objects.filter(customer_id=marketed_customer.pk).count()
    events = OutboxEvent.objects.count()
    assert services.consent_object_to_marketing(actor=TOKEN, customer_id=marketed_customer.pk, source="web") == []
    assert ConsentRecord.objects.filter(customer_id=marketed_customer.pk).count() == count
    assert OutboxEvent.objects.count() == events


def test_after_an_objection_the_customer_can_still_opt_in_again(marketed_customer):
    services.consent_object_to_marketing(actor=TOKEN, customer_id=marketed_customer.pk, source="web")
    assert change(marketed_customer, "marketing_email", S.GRANTED).status == S.GRANTED
    assert CustomerPreferences.objects.get(customer=marketed_customer).email_opt_in is True


def test_staff_record_an_objection_received_by_letter_with_a_reason(marketed_customer, compliance_user):
    from customers.actor import Actor

    records = services.consent_object_to_marketing(
        actor=Actor.for_staff(compliance_user), customer_id=marketed_customer.pk, reason="privacy request 42"
    )
    assert {(r.source, r.reason) for r in records} == {("admin", "privacy request 42")}
