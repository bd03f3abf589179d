"""A customer merge carries the person's newer consent decisions over; the proof never moves."""

from datetime import timedelta

import pytest
from django.utils import timezone

from consent import selectors
from consent.models import ConsentRecord, ConsentState
from customers import services as customer_services
from customers.actor import Actor
from customers.errors import InvalidStatusTransition
from customers.models import CustomerPreferences
from tests.consent.conftest import change, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def _merge(survivor, merged):
    return customer_services.customer_merge(actor=SYSTEM, survivor_id=survivor.pk, merged_id=merged.pk)


def _email_opt_in(customer) -> bool:
    return CustomerPreferences.objects.get(customer=customer).email_opt_in


def test_a_newer_not_asked_record_never_undoes_a_grant():
    survivor = CustomerFactory(preferences={"email_opt_in": True})
    merged = CustomerFactory()  # newer, and never asked
    _merge(survivor, merged)
    assert state_of(survivor, "marketing_email").status == "granted"
    assert _email_opt_in(survivor) is True


def test_a_newer_grant_is_carried_over_with_its_wording_and_validity():
    survivor = CustomerFactory()
    merged = CustomerFactory()
    granted = change(merged, "marketing_sms", "granted", source="mobile")
    _merge(survivor, merged)
    state = state_of(survivor, "marketing_sms")
    assert (state.status, state.policy_version_id, state.valid_until) == (
        "granted",
        granted.policy_version_id,
        granted.valid_until,
    )
    record = state.last_record
    assert record.previous_status == "not_requested" and record.source == "mobile"
    assert record.occurred_at == granted.updated_at and "Carried over" in record.reason
    assert CustomerPreferences.objects.get(customer=survivor).sms_opt_in is True
    # the merged customer's proof stays where it was; the merged customer no longer counts
    assert state_of(merged, "marketing_sms").status == "granted"
    consenting = selectors.customers_consenting_to("marketing_sms")
    assert consenting.filter(pk=survivor.pk).exists() and not consenting.filter(pk=merged.pk).exists()


def test_a_newer_withdrawal_withdraws_the_survivors_grant():
    survivor = CustomerFactory(preferences={"email_opt_in": True})
    merged = CustomerFactory(preferences={"email_opt_in": True})
    change(merged, "marketing_email", "revoked")
    _merge(survivor, merged)
    state = state_of(survivor, "marketing_email")
    assert (state.status, state.last_record.previous_status) == ("revoked", "granted")
    assert _email_opt_in(survivor) is False


def test_a_newer_refusal_answers_the_survivors_open_question():
    survivor = CustomerFactory()
    change(survivor, "marketing_push", "pending")
    merged = CustomerFactory()
    change(merged, "marketing_push", "denied")
    _merge(survivor, merged)
    assert state_of(survivor, "marketing_push").status == "denied"


def test_the_survivors_own_newer_decision_wins():
    merged = CustomerFactory(preferences={"email_opt_in": True})
    survivor = CustomerFactory()
    change(survivor, "marketing_email", "denied")
    _merge(survivor, merged)
    assert state_of(survivor, "marketing_email").status == "denied"


def test_a_lapsed_grant_carries_nothing():
    survivor = CustomerFactory()
    merged = CustomerFactory(preferences={"email_opt_in": True})
    ConsentState.objects.filter(customer=merged, purpose__code="marketing_email").update(
        valid_until=timezone.now() - timedelta(days=1)
    )
    _merge(survivor, merged)
    assert state_of(survivor, "marketing_email").status == "not_requested"


def test_every_carried_record_is_an_allowed_move():
    from consent.services import transition_allowed

    survivor = CustomerFactory(preferences={"email_opt_in": True, "sms_opt_in": True})
    merged = CustomerFactory(preferences={"push_opt_in": True})
    change(merged, "marketing_email", "denied")
    change(merged, "marketing_direct_mail", "denied")
    change(merged, "profiling", "pending")
    _merge(survivor, merged)
    carried = ConsentRecord.objects.filter(customer_id=survivor.pk, reason__startswith="Carried over")
    assert carried.count() == 3  # email withdrawn, push granted, direct mail refused; sms and profiling untouched
    for record in carried:
        assert transition_allowed(record.previous_status, record.status), record


def test_a_merged_customers_consent_cannot_change_any_more():
    survivor, merged = CustomerFactory(), CustomerFactory()
    _merge(survivor, merged)
    with pytest.raises(InvalidStatusTransition) as refused:
        change(merged, "marketing_email", "granted")
    assert refused.value.code == "CUSTOMER_MERGED"


def test_undo_withdraws_a_carried_grant_the_survivor_still_holds():
    survivor, merged = CustomerFactory(), CustomerFactory()
    change(merged, "marketing_sms", "granted")
    merge = _merge(survivor, merged)
    customer_services.customer_merge_undo(actor=SYSTEM, merge_id=merge.pk)
    assert state_of(survivor, "marketing_sms").status == "revoked"
    assert state_of(merged, "marketing_sms").status == "granted"
    assert CustomerPreferences.objects.get(customer=survivor).sms_opt_in is False
