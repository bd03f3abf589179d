"""A new policy version can require re-consent: older grants need renewal until renewed."""

import pytest

from consent import selectors
from consent.errors import PolicyVersionNotFound, PolicyVersionOutdated
from consent.models import ConsentStatus
from tests.consent.conftest import change, new_version, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

S = ConsentStatus


def _needs_renewal(customer, code: str) -> bool:
    return selectors.consent_states().get(customer=customer, purpose__code=code).needs_renewal


@pytest.fixture
def granted_pair():
    first = CustomerFactory(preferences={"email_opt_in": True})
    second = CustomerFactory(preferences={"email_opt_in": True})
    return first, second


def test_a_version_that_does_not_require_re_consent_leaves_grants_valid(granted_pair):
    new_version("marketing_email", "2026-01", days_ago=1)
    assert not _needs_renewal(granted_pair[0], "marketing_email")
    assert selectors.customers_consenting_to("marketing_email").filter(pk__in=[c.pk for c in granted_pair]).count() == 2


def test_a_version_requiring_re_consent_flags_older_grants_until_renewed(granted_pair, api):
    first, second = granted_pair
    new_version("marketing_email", "2026-01", days_ago=1, requires_reconsent=True)

    assert _needs_renewal(first, "marketing_email") and _needs_renewal(second, "marketing_email")
    flagged = selectors.consent_states_needing_renewal(purpose_code="marketing_email")
    assert set(flagged.values_list("customer_id", flat=True)) >= {first.pk, second.pk}
    assert not selectors.customers_consenting_to("marketing_email").filter(pk__in=[first.pk, second.pk]).exists()
    # The grant stands as a record, but it does not count until renewed — and the opt-in, as the API
    # and the admin read it, says so too: it never disagrees with customers_consenting_to.
    assert state_of(first, "marketing_email").status == S.GRANTED
    assert api.get(f"/api/v1/customers/{first.pk}/preferences").json()["communication"]["email"] is False
    assert api.get(f"/api/v1/customers/{first.pk}").json()["preferences"]["communication"]["email"] is False

    listed = api.get(f"/api/v1/customers/{first.pk}/consents?needs_renewal=true").json()
    assert [row["purpose"] for row in listed] == ["marketing_email"]
    assert listed[0]["needs_renewal"] is True and listed[0]["is_valid"] is False

    with pytest.raises(PolicyVersionOutdated):
        change(first, "marketing_email", S.GRANTED, policy_version="2025-01")
    renewed = change(first, "marketing_email", S.GRANTED, policy_version="2026-01")
    assert renewed.last_record.trigger == "renewal"
    assert not _needs_renewal(first, "marketing_email")
    assert _needs_renewal(second, "marketing_email")
    consenting = selectors.customers_consenting_to("marketing_email")
    assert consenting.filter(pk=first.pk).exists() and not consenting.filter(pk=second.pk).exists()


def test_a_version_not_yet_in_effect_changes_nothing_yet(granted_pair):
    new_version("marketing_email", "2027-01", days_ago=-30, requires_reconsent=True)
    assert not _needs_renewal(granted_pair[0], "marketing_email")
    with pytest.raises(PolicyVersionNotFound):
        change(granted_pair[0], "marketing_email", S.GRANTED, policy_version="2027-01")


def test_a_denied_or_revoked_purpose_never_needs_renewal(customer):
    change(customer, "marketing_sms", S.DENIED)
    new_version("marketing_sms", "2026-01", days_ago=1, requires_reconsent=True)
    assert not _needs_renewal(customer, "marketing_sms")


def test_an_unknown_version_is_refused(customer):
    with pytest.raises(PolicyVersionNotFound) as refused:
        change(customer, "marketing_sms", S.GRANTED, policy_version="1999-01")
    assert refused.value.errors["policy_version"]


def test_switching_the_opt_in_on_again_renews_the_grant_on_the_new_version(granted_pair, api):
    first, second = granted_pair
    new_version("marketing_email", "2026-01", days_ago=1, requires_reconsent=True)
    response = api.patch(
        f"/api/v1/customers/{first.pk}/preferences", {"communication": {"email": True}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["communication"]["email"] is True
    state = state_of(first, "marketing_email")
    assert (state.policy_version.version, state.last_record.trigger) == ("2026-01", "renewal")
    assert selectors.customers_consenting_to("marketing_email").filter(pk=first.pk).exists()
    assert api.get(f"/api/v1/customers/{second.pk}/preferences").json()["communication"]["email"] is False


def test_the_admin_inline_shows_the_opt_in_as_consent_has_it(granted_pair, client, rep_user):
    first, _ = granted_pair
    new_version("marketing_email", "2026-01", days_ago=1, requires_reconsent=True)
    client.force_login(rep_user)
    page = client.get(f"/admin/customers/customer/{first.pk}/change/")
    assert page.status_code == 200
    inlines = page.context["inline_admin_formsets"]
    inline = next(fs for fs in inlines if fs.formset.model.__name__ == "CustomerPreferences")
    assert inline.formset.forms[0].initial["email_opt_in"] is False
