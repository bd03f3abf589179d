"""The five facts of proof — who, what, when, how, which wording — on every record, whichever door."""

import pytest
from django.apps import apps

from consent import services
from consent.models import ConsentRecord
from customers import services as customer_services
from customers.actor import Actor
from customers.data_classification import personal_fields, unclassified_fields
from tests.consent.conftest import TOKEN, change, expire_all
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_every_record_holds_who_what_when_how_and_which_wording(rep_user):
    customer = CustomerFactory(preferences={"email_opt_in": True})  # sign-up
    change(customer, "marketing_sms", "granted", ip_address="198.51.100.1", user_agent="App/2")  # API
    customer_services.customer_preferences_update(actor=TOKEN, customer_id=customer.pk, changes={"push_opt_in": True})
    customer_services.customer_preferences_update(
        actor=Actor.for_staff(rep_user), customer_id=customer.pk, changes={"personalization": True}
    )
    change(
        customer, "profiling", "denied", actor=Actor.for_staff(rep_user), source="call_center", reason="On the phone"
    )
    services.consent_object_to_marketing(actor=TOKEN, customer_id=customer.pk, source="email_link")
    expire_all()
    records = list(ConsentRecord.objects.filter(customer_id=customer.pk).select_related("purpose", "policy_version"))
    assert len(records) > 12
    for record in records:
        assert record.customer_id == customer.pk and record.actor  # who
        assert record.purpose.code and record.status  # what
        assert record.occurred_at and record.recorded_at  # when
        assert record.source and record.trigger  # how
        assert record.policy_version.text_hash and record.policy_version.version  # which wording
        if record.actor.startswith("staff:"):
            assert record.reason, record
    api_record = next(r for r in records if r.purpose.code == "marketing_sms" and r.status == "granted")
    assert (api_record.ip_address, api_record.user_agent) == ("198.51.100.1", "App/2")


@pytest.mark.parametrize("model_name", ["ConsentPurpose", "PolicyVersion", "ConsentRecord", "ConsentState"])
def test_every_text_field_is_classified(model_name):
    model = apps.get_model("consent", model_name)
    assert unclassified_fields(model) == []
    history = getattr(model, "history", None)
    if history is not None:
        assert unclassified_fields(history.model) == []


def test_ip_address_user_agent_and_staff_reason_are_personal():
    assert personal_fields(ConsentRecord) == {"ip_address", "user_agent", "reason"}
