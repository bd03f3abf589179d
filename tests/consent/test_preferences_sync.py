"""One source of truth: the opt-ins in the preferences and the consent state never disagree."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from consent import selectors, services
from consent.models import ConsentRecord, ConsentState, ConsentStatus
from customers import services as customer_services
from customers.actor import Actor
from customers.extensions import apply_preference_views
from customers.models import CustomerPreferences, OutboxEvent
from tests.consent.conftest import TOKEN, change, expire_all, new_version, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus


def assert_in_agreement(*customers) -> None:
    """For every customer and every purpose with a preference column: the opt-in as the API and the
    admin read it == (the customer is in `customers_consenting_to(purpose)`): granted, within its
    validity, on a current-enough version. The stored column may lag (a lapse the expiry task has
    not written yet), what is read never does.
    """
    ids = [c.pk for c in customers] if customers else None
    prefs = list(
        CustomerPreferences.objects.all() if ids is None else CustomerPreferences.objects.filter(customer_id__in=ids)
    )
    apply_preference_views(prefs)  # what GET /customers/{id}, GET …/preferences and the admin inline show
    for code, field in services.PREFERENCE_FIELD_BY_PURPOSE.items():
        consenting = set(selectors.customers_consenting_to(code).values_list("pk", flat=True))
        for pref in prefs:
            assert getattr(pref, field) == (pref.customer_id in consenting), (pref.customer_id, code)
            if getattr(pref, field):
                # Nothing reads as on that the stored column and the state do not hold as granted too.
                assert getattr(CustomerPreferences.objects.get(customer_id=pref.customer_id), field) is True
                assert state_of(pref.customer_id, code).status == S.GRANTED


def test_a_new_customer_starts_with_an_explicit_state_for_every_purpose(customer):
    states = {s.purpose.code: s for s in ConsentState.objects.filter(customer=customer).select_related("purpose")}
    assert len(states) == 8
    assert {s.status for s in states.values()} == {S.NOT_REQUESTED}
    records = ConsentRecord.objects.filter(customer_id=customer.pk)
    assert records.count() == 8
    assert set(records.values_list("trigger", flat=True)) == {"sign_up"}
    assert_in_agreement(customer)


def test_the_choice_at_sign_up_is_recorded_as_a_grant():
    customer = CustomerFactory(
        registration_source="mobile", preferences={"email_opt_in": True, "personalization": True}
    )
    email = state_of(customer, "marketing_email")
    assert email.status == S.GRANTED
    assert email.source == "mobile"
    assert email.valid_until is not None and email.granted_at is not None
    assert state_of(customer, "personalization").status == S.GRANTED
    assert state_of(customer, "marketing_sms").status == S.NOT_REQUESTED
    assert_in_agreement(customer)


def test_switching_an_opt_in_on_in_the_preferences_records_a_grant(customer):
    customer_services.customer_preferences_update(actor=TOKEN, customer_id=customer.pk, changes={"sms_opt_in": True})
    state = state_of(customer, "marketing_sms")
    assert state.status == S.GRANTED
    record = state.last_record
    assert (record.trigger, record.source, record.actor) == ("preferences", "web", "token:storefront")
    assert record.policy_version.version == "2025-01"
    assert_in_agreement(customer)


def test_switching_it_off_records_a_withdrawal(customer):
    customer_services.customer_preferences_update(actor=TOKEN, customer_id=customer.pk, changes={"sms_opt_in": True})
    customer_services.customer_preferences_update(actor=TOKEN, customer_id=customer.pk, changes={"sms_opt_in": False})
    assert state_of(customer, "marketing_sms").status == S.REVOKED
    assert_in_agreement(customer)


def test_a_staff_change_in_the_preferences_is_recorded_as_admin_with_a_reason(customer, rep_user):
    staff = Actor.for_staff(rep_user)
    customer_services.customer_preferences_update(actor=staff, customer_id=customer.pk, changes={"push_opt_in": True})
    record = state_of(customer, "marketing_push").last_record
    assert record.source == "admin"
    assert record.actor == f"staff:{rep_user.username}"
    assert "push_opt_in" in record.reason


def test_a_consent_change_writes_the_preference_through(customer):
    change(customer, "marketing_email", S.GRANTED)
    assert CustomerPreferences.objects.get(customer=customer).email_opt_in is True
    change(customer, "marketing_email", S.REVOKED)
    assert CustomerPreferences.objects.get(customer=customer).email_opt_in is False
    change(customer, "third_party_sharing", S.GRANTED)
    assert CustomerPreferences.objects.get(customer=customer).third_party_sharing is True
    assert_in_agreement(customer)


def test_no_loop_one_change_one_record_one_preference_event(customer):
    records = ConsentRecord.objects.filter(customer_id=customer.pk).count()
    change(customer, "marketing_email", S.GRANTED)
    assert ConsentRecord.objects.filter(customer_id=customer.pk).count() == records + 1
    assert (
        OutboxEvent.objects.filter(subject=str(customer.pk), event_type="customer.preferences.updated.v1").count() == 1
    )
    customer_services.customer_preferences_update(actor=TOKEN, customer_id=customer.pk, changes={"sms_opt_in": True})
    assert ConsentRecord.objects.filter(customer_id=customer.pk).count() == records + 2
    assert (
        OutboxEvent.objects.filter(subject=str(customer.pk), event_type="customer.preferences.updated.v1").count() == 2
    )


def test_the_preference_history_names_the_consent_actor(customer):
    change(customer, "marketing_email", S.GRANTED)
    latest = CustomerPreferences.history.filter(customer_id=customer.pk).latest("history_date")
    assert latest.history_actor == "token:storefront"
    assert latest.email_opt_in is True


def test_switching_an_opt_in_on_grants_on_the_wording_in_force(customer):
    # A version requiring re-consent is in effect; switching the opt-in on grants on that version.
    new_version("marketing_sms", "2026-02", requires_reconsent=True)
    customer_services.customer_preferences_update(actor=TOKEN, customer_id=customer.pk, changes={"sms_opt_in": True})
    assert state_of(customer, "marketing_sms").policy_version.version == "2026-02"


def test_the_origin_middleware_is_installed_in_the_real_settings():
    from django.conf import settings

    middleware = list(settings.MIDDLEWARE)
    assert "consent.context.RequestOriginMiddleware" in middleware
    # After the correlation id (so its logs carry it), before anything that may answer early.
    assert middleware.index("consent.context.RequestOriginMiddleware") > middleware.index(
        "customers.middleware.CorrelationIdMiddleware"
    )


def test_a_preference_change_through_the_api_keeps_ip_and_user_agent(api_client, customer):
    # No override_settings: the project's own MIDDLEWARE must carry the request origin to consent.
    client = api_client(customer=customer)
    response = client.patch(
        f"/api/v1/customers/{customer.pk}/preferences",
        {"communication": {"email": True}},
        format="json",
        HTTP_USER_AGENT="Shop/3.1 (iPhone)",
        REMOTE_ADDR="198.51.100.23",
    )
    assert response.status_code == 200, response.content
    record = state_of(customer, "marketing_email").last_record
    assert (record.ip_address, record.user_agent) == ("198.51.100.23", "Shop/3.1 (iPhone)")


def test_a_random_walk_through_every_door_never_lets_them_disagree(rep_user):
    rng = random.Random(4)
    customers = [CustomerFactory() for _ in range(4)]
    staff = Actor.for_staff(rep_user)
    fields = list(services.PURPOSE_BY_PREFERENCE_FIELD)
    for step in range(80):
        customer = rng.choice(customers)
        door = rng.choice(["preferences", "consent", "objection", "expiry", "staff", "lapse", "policy"])
        if door == "preferences":
            field = rng.choice(fields)
            customer_services.customer_preferences_update(
                actor=TOKEN, customer_id=customer.pk, changes={field: rng.random() < 0.6}
            )
        elif door == "staff":
            customer_services.customer_preferences_update(
                actor=staff, customer_id=customer.pk, changes={rng.choice(fields): rng.random() < 0.5}
            )
        elif door == "consent":
            code = rng.choice(list(services.PREFERENCE_FIELD_BY_PURPOSE))
            current = state_of(customer, code).status
            allowed = [s for s in services.REQUESTABLE_STATUSES if services.transition_allowed(current, s)]
            if allowed:
                change(customer, code, rng.choice(allowed))
        elif door == "objection":
            services.consent_object_to_marketing(actor=TOKEN, customer_id=customer.pk, source="web")
        elif door == "lapse":
            # A grant runs past its validity; the expiry task has not run yet.
            ConsentState.objects.filter(customer=customer, status=S.GRANTED, valid_until__isnull=False).update(
                valid_until=timezone.now() - timedelta(minutes=1)
            )
        elif door == "policy":
            code = rng.choice(list(services.PREFERENCE_FIELD_BY_PURPOSE))
            new_version(code, f"walk-{step}", requires_reconsent=rng.random() < 0.7)
        else:
            expire_all()
        assert_in_agreement(*customers)
