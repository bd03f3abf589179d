"""`customers_consenting_to(purpose)`: the one answer every later consumer must use."""

from datetime import timedelta

import pytest
from django.utils import timezone

from consent import selectors
from consent.errors import PurposeNotFound
from consent.models import ConsentState, ConsentStatus
from customers.models import Customer
from tests.consent.conftest import change
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus


def test_only_valid_grants_count():
    granted = CustomerFactory(preferences={"sms_opt_in": True})
    never_asked = CustomerFactory()
    denied = CustomerFactory()
    change(denied, "marketing_sms", S.DENIED)
    revoked = CustomerFactory(preferences={"sms_opt_in": True})
    change(revoked, "marketing_sms", S.REVOKED)
    lapsed = CustomerFactory(preferences={"sms_opt_in": True})
    ConsentState.objects.filter(customer=lapsed, purpose__code="marketing_sms").update(
        valid_until=timezone.now() - timedelta(seconds=1)
    )
    erased = CustomerFactory(preferences={"sms_opt_in": True})
    Customer.objects.filter(pk=erased.pk).update(status="erased")

    ids = {granted.pk, never_asked.pk, denied.pk, revoked.pk, lapsed.pk, erased.pk}
    consenting = selectors.customers_consenting_to("marketing_sms").filter(pk__in=ids)
    assert list(consenting.values_list("pk", flat=True)) == [granted.pk]
    assert selectors.customer_consents_to(customer_id=granted.pk, purpose="marketing_sms")
    assert not selectors.customer_consents_to(customer_id=revoked.pk, purpose="marketing_sms")


def test_it_is_one_query_usable_as_a_subquery(django_assert_num_queries):
    CustomerFactory(preferences={"sms_opt_in": True})
    consenting = selectors.customers_consenting_to("marketing_sms")
    with django_assert_num_queries(1):
        assert Customer.objects.filter(pk__in=consenting.values("pk")).count() >= 1


def test_an_unknown_purpose_is_an_error():
    with pytest.raises(PurposeNotFound):
        selectors.customers_consenting_to("marketing_carrier_pigeon")
