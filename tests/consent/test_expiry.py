"""Expiry: a beat task moves grants past their validity to expired, in batches, idempotently."""

from datetime import timedelta

import pytest
from django.utils import timezone

from consent import selectors, services, tasks
from consent.models import ConsentRecord, ConsentState, ConsentStatus
from customers.actor import Actor
from customers.models import CustomerPreferences, OutboxEvent
from tests.consent.conftest import change, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus


def _backdate(customer, code: str, *, days_past: int) -> None:
    """Make the grant's validity end `days_past` days ago (the state is ours to move in a test)."""
    ConsentState.objects.filter(customer=customer, purpose__code=code).update(
        valid_until=timezone.now() - timedelta(days=days_past)
    )


@pytest.fixture
def lapsed():
    customers = [CustomerFactory(preferences={"email_opt_in": True}) for _ in range(5)]
    for customer in customers:
        change(customer, "personalization", S.GRANTED)
        _backdate(customer, "marketing_email", days_past=1)
    return customers


def test_expired_consent_stops_counting_at_once_even_before_the_task_runs(lapsed):
    assert not selectors.customers_consenting_to("marketing_email").filter(pk__in=[c.pk for c in lapsed]).exists()
    assert selectors.customers_consenting_to("personalization").filter(pk__in=[c.pk for c in lapsed]).count() == 5


def test_the_task_expires_due_grants_and_turns_the_opt_ins_off(lapsed):
    assert tasks.expire_consents.delay(batch_size=2).get() == 5
    for customer in lapsed:
        state = state_of(customer, "marketing_email")
        assert (state.status, state.valid_until, state.granted_at) == (S.EXPIRED, None, None)
        record = state.last_record
        assert (record.previous_status, record.trigger, record.source) == (S.GRANTED, "expiry", "system")
        assert record.actor == "system:consent_expiry"
        assert record.occurred_at < record.recorded_at  # when it lapsed, not when we noticed
        assert CustomerPreferences.objects.get(customer=customer).email_opt_in is False
        assert state_of(customer, "personalization").status == S.GRANTED  # not due


def test_running_it_twice_changes_nothing_the_second_time(lapsed):
    assert tasks.expire_consents() == 5
    records, events = ConsentRecord.objects.count(), OutboxEvent.objects.count()
    history = CustomerPreferences.history.count()
    assert tasks.expire_consents() == 0
    assert (ConsentRecord.objects.count(), OutboxEvent.objects.count()) == (records, events)
    assert CustomerPreferences.history.count() == history


def test_expiry_publishes_revoked_with_its_reason_and_the_preference_change(lapsed):
    tasks.expire_consents()
    customer = lapsed[0]
    revoked = OutboxEvent.objects.get(subject=str(customer.pk), event_type="customer.consent.revoked.v1")
    assert (revoked.data["status"], revoked.data["reason"]) == ("expired", "expiry")
    prefs_event = OutboxEvent.objects.filter(
        subject=str(customer.pk), event_type="customer.preferences.updated.v1"
    ).latest("occurred_at")
    assert prefs_event.data["changed_fields"] == ["email_opt_in"]


def test_the_preference_change_has_a_history_row_naming_the_job(lapsed):
    tasks.expire_consents()
    latest = CustomerPreferences.history.filter(customer_id=lapsed[0].pk).latest("history_date")
    assert latest.email_opt_in is False
    assert latest.history_actor == "system:consent_expiry"
    assert "consent expired" in latest.history_change_reason


def test_a_lapsed_opt_in_reads_as_off_at_once_and_the_task_drops_the_cached_representation(
    api, lapsed, django_capture_on_commit_callbacks
):
    from customers import cache

    customer = lapsed[0]
    # Before the task has run the column still holds True, but the API shows consent's answer.
    assert CustomerPreferences.objects.get(customer=customer).email_opt_in is True
    assert api.get(f"/api/v1/customers/{customer.pk}").json()["preferences"]["communication"]["email"] is False
    assert api.get(f"/api/v1/customers/{customer.pk}/preferences").json()["communication"]["email"] is False
    assert cache.get_customer_representation(customer.pk)[0] is not None
    with django_capture_on_commit_callbacks(execute=True):
        tasks.expire_consents()
    assert cache.get_customer_representation(customer.pk)[0] is None
    assert api.get(f"/api/v1/customers/{customer.pk}").json()["preferences"]["communication"]["email"] is False
    assert CustomerPreferences.objects.get(customer=customer).email_opt_in is False


def test_switching_a_lapsed_opt_in_on_before_the_task_runs_records_expiry_then_a_new_grant(api, lapsed):
    customer = lapsed[0]
    response = api.patch(
        f"/api/v1/customers/{customer.pk}/preferences", {"communication": {"email": True}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["communication"]["email"] is True
    records = ConsentRecord.objects.filter(customer_id=customer.pk, purpose__code="marketing_email")
    assert sorted((r.previous_status, r.status, r.trigger) for r in records.exclude(trigger="sign_up")) == [
        (S.EXPIRED, S.GRANTED, "preferences"),
        (S.GRANTED, S.EXPIRED, "expiry"),
    ]
    assert state_of(customer, "marketing_email").last_record.trigger == "preferences"
    assert selectors.customer_consents_to(customer_id=customer.pk, purpose="marketing_email")


def test_granting_a_lapsed_grant_again_through_consent_before_the_task_runs(lapsed):
    customer = lapsed[0]
    state = change(customer, "marketing_email", S.GRANTED)
    assert (state.last_record.previous_status, state.status) == (S.EXPIRED, S.GRANTED)
    assert selectors.customer_consents_to(customer_id=customer.pk, purpose="marketing_email")
    # Withdrawing a lapsed grant writes its expiry down; nothing is left to withdraw.
    other = lapsed[1]
    assert change(other, "marketing_email", S.REVOKED).status == S.EXPIRED


def test_batches_cover_everything_due(lapsed):
    assert services.consent_expire_due(actor=Actor.system("tests"), batch_size=2, max_batches=1) == 2
    assert services.consent_expire_due(actor=Actor.system("tests"), batch_size=2) == 3
    assert ConsentState.objects.filter(purpose__code="marketing_email", status=S.EXPIRED).count() == 5


def test_re_consent_after_expiry(lapsed):
    tasks.expire_consents()
    customer = lapsed[0]
    state = change(customer, "marketing_email", S.GRANTED)
    assert state.last_record.previous_status == S.EXPIRED
    assert CustomerPreferences.objects.get(customer=customer).email_opt_in is True


def test_the_beat_schedule_runs_it():
    from config.celery_app import app

    entry = app.conf.beat_schedule["consent-expire-due"]
    assert entry["task"] == "consent.tasks.expire_consents"
    assert entry["schedule"] == timedelta(hours=1)
    assert "consent.tasks.expire_consents" in app.tasks


def test_expiry_goes_through_the_customers_service_and_bumps_the_version(lapsed):
    from customers.models import Customer

    customer = lapsed[0]
    version = Customer.objects.get(pk=customer.pk).version
    tasks.expire_consents()
    assert Customer.objects.get(pk=customer.pk).version == version + 1
    latest = Customer.history.filter(id=customer.pk).latest("history_date")
    assert latest.version == version + 1
    assert latest.history_actor == "system:consent_expiry"


def test_expiry_imports_no_customers_model():
    import ast
    import inspect

    from consent.services import expiry

    tree = ast.parse(inspect.getsource(expiry))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith("customers.") and name.split(".")[1] == "models"}
    assert {name for name in imported if name.startswith("customers")} <= {
        "customers",
        "customers.services",
        "customers.selectors",
        "customers.actor",
    }
