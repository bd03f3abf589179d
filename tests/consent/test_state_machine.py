"""Every allowed and every refused move of the consent state machine, per customer and purpose."""

import pytest

from consent import services
from consent.errors import ConsentAlreadyInState, TransitionNotAllowed
from consent.models import ConsentRecord, ConsentState, ConsentStatus
from customers.actor import Actor
from customers.errors import ValidationFailed
from tests.consent.conftest import change, expire_all, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus
PURPOSE = "personalization"  # not marketing, 12 months validity; the opt-in sync is covered elsewhere

# The issue's table, verbatim: not_requested → pending → granted / denied; granted → revoked /
# expired; revoked, expired, denied → granted.
ISSUE = {
    S.NOT_REQUESTED: {S.PENDING},
    S.PENDING: {S.GRANTED, S.DENIED},
    S.GRANTED: {S.REVOKED, S.EXPIRED},
    S.DENIED: {S.GRANTED},
    S.REVOKED: {S.GRANTED},
    S.EXPIRED: {S.GRANTED},
}
# The one documented widening (consent.services._common's docstring): asked and answered at once,
# the sign-up checkbox beside its notice.
WIDENING = {S.NOT_REQUESTED: {S.GRANTED, S.DENIED}}
EXPECTED = {state: ISSUE[state] | WIDENING.get(state, set()) for state in ISSUE}
REQUESTABLE = (S.GRANTED, S.DENIED, S.REVOKED, S.PENDING)


def bring_to(customer, status: str) -> None:
    """Move the customer's consent for PURPOSE into `status` through allowed moves."""
    path = {
        S.NOT_REQUESTED: [],
        S.PENDING: [S.PENDING],
        S.GRANTED: [S.GRANTED],
        S.DENIED: [S.DENIED],
        S.REVOKED: [S.GRANTED, S.REVOKED],
        S.EXPIRED: [S.GRANTED, S.EXPIRED],
    }[status]
    for step in path:
        if step == S.EXPIRED:
            expire_all()
        else:
            change(customer, PURPOSE, step)
    assert state_of(customer, PURPOSE).status == status


def test_the_table_is_the_issues_state_machine_plus_the_documented_widening():
    for previous, targets in EXPECTED.items():
        for new in S.values:
            assert services.transition_allowed(previous, new) == (new in targets), (previous, new)
    assert {k: set(v) for k, v in services.ISSUE_TRANSITIONS.items()} == ISSUE
    assert {k: set(v) for k, v in services.WIDENED_TRANSITIONS.items()} == WIDENING
    from consent.services import _common

    assert "widening" in _common.__doc__ and "not_requested → granted / denied directly" in _common.__doc__
    # No state may stay where it is (a repeated answer is not a move).
    assert not any(services.transition_allowed(state, state) for state in S.values)


CASES = [(previous, new) for previous in EXPECTED for new in REQUESTABLE]


@pytest.mark.parametrize(("previous", "new"), CASES, ids=[f"{p}->{n}" for p, n in CASES])
def test_every_requestable_move(previous, new):
    customer = CustomerFactory()
    bring_to(customer, previous)
    records_before = ConsentRecord.objects.filter(customer_id=customer.pk).count()

    if new == previous:
        # Asking for the current state is not a move: refused with its own code, nothing recorded.
        with pytest.raises(ConsentAlreadyInState) as refused:
            change(customer, PURPOSE, new)
        assert refused.value.code == "CONSENT_ALREADY_IN_STATE"
        assert previous in refused.value.message
        assert ConsentRecord.objects.filter(customer_id=customer.pk).count() == records_before
    elif new in EXPECTED[previous]:
        state = change(customer, PURPOSE, new)
        assert state.status == new
        record = state.last_record
        assert (record.previous_status, record.status) == (previous, new)
        assert ConsentRecord.objects.filter(customer_id=customer.pk).count() == records_before + 1
    else:
        with pytest.raises(TransitionNotAllowed) as refused:
            change(customer, PURPOSE, new)
        assert refused.value.code == "CONSENT_TRANSITION_NOT_ALLOWED"
        assert previous in refused.value.message and new in refused.value.message
        assert state_of(customer, PURPOSE).status == previous
        assert ConsentRecord.objects.filter(customer_id=customer.pk).count() == records_before


@pytest.mark.parametrize("status", [S.NOT_REQUESTED, S.EXPIRED, "approved"])
def test_statuses_a_client_cannot_ask_for(customer, status):
    with pytest.raises(ValidationFailed) as refused:
        change(customer, PURPOSE, status)
    assert refused.value.errors["status"]


@pytest.mark.parametrize("previous", list(EXPECTED))
def test_expiry_moves_only_granted(previous):
    customer = CustomerFactory()
    bring_to(customer, previous)
    expire_all()
    expected = S.EXPIRED if previous in (S.GRANTED, S.EXPIRED) else previous
    assert state_of(customer, PURPOSE).status == expected


def test_from_nothing_recorded_a_first_answer_is_allowed_but_not_a_withdrawal(customer):
    purpose = services.purpose_create(actor=Actor.system("tests"), code="surveys", name="Surveys")
    services.policy_version_create(
        actor=Actor.system("tests"),
        purpose_id=purpose.pk,
        version="v1",
        notice_text="May we ask you about your orders?",
        effective_at="2025-01-01T00:00:00Z",
    )
    assert not ConsentState.objects.filter(customer=customer, purpose=purpose).exists()
    with pytest.raises(TransitionNotAllowed):
        change(customer, "surveys", S.REVOKED)
    assert change(customer, "surveys", S.PENDING).status == S.PENDING
    record = ConsentRecord.objects.get(customer_id=customer.pk, purpose=purpose)
    assert record.previous_status == ""


def test_granted_again_on_the_same_version_is_refused_but_a_newer_version_renews(customer):
    from tests.consent.conftest import new_version

    first = change(customer, PURPOSE, S.GRANTED)
    with pytest.raises(ConsentAlreadyInState):
        change(customer, PURPOSE, S.GRANTED)
    assert state_of(customer, PURPOSE).last_record_id == first.last_record_id
    new_version(PURPOSE, "2026-01")
    renewed = change(customer, PURPOSE, S.GRANTED, policy_version="2026-01")
    assert renewed.last_record_id != first.last_record_id
    assert renewed.last_record.trigger == "renewal"
    assert renewed.last_record.previous_status == S.GRANTED
    with pytest.raises(TransitionNotAllowed):
        change(customer, PURPOSE, S.GRANTED, policy_version="2025-01")  # back to an older wording


def test_a_withdrawal_records_the_wording_of_the_grant_it_withdraws(customer):
    from tests.consent.conftest import new_version

    granted = change(customer, PURPOSE, S.GRANTED)
    new_version(PURPOSE, "2026-01")
    revoked = change(customer, PURPOSE, S.REVOKED)
    assert revoked.last_record.policy_version_id == granted.policy_version_id


def test_staff_must_give_a_reason_and_it_is_recorded(customer, rep_user):
    staff = Actor.for_staff(rep_user)
    with pytest.raises(ValidationFailed) as refused:
        change(customer, PURPOSE, S.GRANTED, actor=staff, source="call_center")
    assert "reason" in refused.value.errors
    state = change(customer, PURPOSE, S.GRANTED, actor=staff, source="call_center", reason="Asked on the phone")
    assert state.last_record.reason == "Asked on the phone"
    assert state.last_record.actor == f"staff:{rep_user.username}"


def test_tokens_cannot_claim_staff_or_system_sources(customer):
    for source in ("admin", "system", "carrier-pigeon"):
        with pytest.raises(ValidationFailed) as refused:
            change(customer, PURPOSE, S.GRANTED, source=source)
        assert "source" in refused.value.errors


def test_implicit_consent_only_where_the_purpose_allows_it_and_never_for_marketing(customer):
    assert change(customer, "analytics", S.GRANTED, implicit=True).last_record.implicit is True
    for code in ("marketing_email", PURPOSE):
        with pytest.raises(ValidationFailed) as refused:
            change(customer, code, S.GRANTED, implicit=True)
        assert refused.value.code == "IMPLICIT_CONSENT_NOT_ALLOWED"


def test_an_erased_customers_consent_cannot_change(customer):
    from customers.models import Customer

    Customer.objects.filter(pk=customer.pk).update(status="erased")
    with pytest.raises(Exception) as refused:
        change(customer, PURPOSE, S.GRANTED)
    assert refused.value.code == "CUSTOMER_ERASED"


def test_a_repeated_answer_through_the_api_is_a_409_with_its_own_code(api, customer):
    url = f"/api/v1/customers/{customer.pk}/consents/{PURPOSE}"
    assert api.put(url, {"status": "denied"}, format="json").status_code == 200
    again = api.put(url, {"status": "denied"}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "CONSENT_ALREADY_IN_STATE"
    not_allowed = api.put(url, {"status": "revoked"}, format="json")
    assert (not_allowed.status_code, not_allowed.json()["code"]) == (409, "CONSENT_TRANSITION_NOT_ALLOWED")
