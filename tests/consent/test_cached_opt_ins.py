"""The cached GET /customers/{id} never shows an opt-in that consent no longer counts."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from consent.models import ConsentState
from customers import cache as customer_cache
from tests.consent.conftest import new_version
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _email_opt_in(api, customer) -> bool:
    return api.get(f"/api/v1/customers/{customer.pk}").json()["preferences"]["communication"]["email"]


def test_a_representation_cached_before_a_grant_lapses_lives_no_longer_than_the_grant(api):
    customer = CustomerFactory(preferences={"email_opt_in": True})
    ConsentState.objects.filter(customer=customer, purpose__code="marketing_email").update(
        valid_until=timezone.now() + timedelta(seconds=30)
    )
    assert _email_opt_in(api, customer) is True
    ttl = cache.ttl(customer_cache.customer_key(customer.pk))
    assert 0 < ttl <= 31  # not the 5 minutes: by then the opt-in reads as off


def test_without_a_lapse_to_come_the_representation_keeps_the_full_ttl(api, settings):
    customer = CustomerFactory(preferences={"email_opt_in": True})  # valid for 24 months
    assert _email_opt_in(api, customer) is True
    assert cache.ttl(customer_cache.customer_key(customer.pk)) > settings.CUSTOMER_CACHE_TTL_SECONDS - 5


def test_a_wording_requiring_re_consent_drops_the_cached_representations(api, django_capture_on_commit_callbacks):
    granted = CustomerFactory(preferences={"email_opt_in": True})
    other = CustomerFactory()
    assert _email_opt_in(api, granted) is True
    api.get(f"/api/v1/customers/{other.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        new_version("marketing_email", "2026-09", requires_reconsent=True)
    assert cache.get(customer_cache.customer_key(granted.pk)) is None
    assert _email_opt_in(api, granted) is False


def test_a_wording_requiring_re_consent_later_caps_the_cache_at_its_start(api):
    customer = CustomerFactory(preferences={"email_opt_in": True})
    new_version("marketing_email", "2026-10", days_ago=-(20 / 86400), requires_reconsent=True)  # in 20 s
    assert _email_opt_in(api, customer) is True
    assert 0 < cache.ttl(customer_cache.customer_key(customer.pk)) <= 21
