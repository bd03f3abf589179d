"""Events with the record: granted, revoked (also expiry and objection, with the reason), denied."""

import json
from pathlib import Path

import jsonschema
import pytest
from django.db import transaction

from consent import services
from consent.models import ConsentStatus
from customers.models import OutboxEvent
from tests.consent.conftest import TOKEN, change, expire_all
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus
SCHEMAS = Path(__file__).resolve().parents[2] / "consent" / "event_schemas"


def _validate(event: OutboxEvent) -> None:
    schema = json.loads((SCHEMAS / f"{event.event_type}.json").read_text())
    jsonschema.validate(event.data, schema, format_checker=jsonschema.FormatChecker())


def _events(customer, event_type=None):
    events = OutboxEvent.objects.filter(subject=str(customer.pk), event_type__startswith="customer.consent.")
    return events.filter(event_type=event_type) if event_type else events


def test_each_change_publishes_its_event_with_the_record(customer):
    granted = change(customer, "marketing_email", S.GRANTED, ip_address="203.0.113.9", user_agent="UA")
    event = _events(customer, "customer.consent.granted.v1").get()
    _validate(event)
    assert event.data["record_id"] == str(granted.last_record_id)
    assert (event.data["purpose"], event.data["status"], event.data["previous_status"]) == (
        "marketing_email",
        "granted",
        "not_requested",
    )
    assert event.data["policy_version"] == "2025-01"
    assert event.data["reason"] == "consent"
    assert event.metadata["actor"] == "token:storefront"
    # No personal data in the payload: the IP address and user agent stay in the record.
    assert "203.0.113.9" not in json.dumps(event.data) and "user_agent" not in event.data

    change(customer, "marketing_email", S.REVOKED)
    revoked = _events(customer, "customer.consent.revoked.v1").get()
    _validate(revoked)
    assert (revoked.data["status"], revoked.data["reason"]) == ("revoked", "withdrawal")

    change(customer, "marketing_sms", S.DENIED)
    denied = _events(customer, "customer.consent.denied.v1").get()
    _validate(denied)
    assert denied.data["reason"] == "refusal"


def test_expiry_and_objection_events_carry_their_reason():
    customer = CustomerFactory(preferences={"email_opt_in": True, "sms_opt_in": True})
    expire_all()
    services.consent_object_to_marketing(actor=TOKEN, customer_id=customer.pk, source="web")
    events = list(_events(customer).exclude(event_type="customer.consent.granted.v1"))
    for event in events:
        _validate(event)
    reasons = {(e.data["purpose"], e.data["status"], e.data["reason"]) for e in events}
    assert ("marketing_email", "expired", "expiry") in reasons
    assert ("marketing_sms", "expired", "expiry") in reasons
    assert ("marketing_push", "denied", "objection") in reasons


def test_sign_up_grants_are_published_and_not_requested_is_not():
    customer = CustomerFactory(preferences={"push_opt_in": True})
    events = list(_events(customer))
    assert [(e.event_type, e.data["purpose"]) for e in events] == [("customer.consent.granted.v1", "marketing_push")]
    _validate(events[0])
    assert events[0].data["previous_status"] is None and events[0].data["trigger"] == "sign_up"


def test_pending_publishes_nothing(customer):
    change(customer, "marketing_email", S.PENDING)
    assert not _events(customer).exists()


def test_the_event_and_the_record_commit_together_or_not_at_all(customer):
    before = OutboxEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        change(customer, "marketing_email", S.GRANTED)
        raise RuntimeError("the caller's transaction fails")
    assert OutboxEvent.objects.count() == before
    from tests.consent.conftest import state_of

    assert state_of(customer, "marketing_email").status == S.NOT_REQUESTED
