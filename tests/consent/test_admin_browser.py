"""The consent admin in a real browser (Playwright driving Debian's chromium), as compliance uses it.

Playwright's sync API runs in a thread of its own (`tests.e2e.browser.in_a_browser`); database
checks run in the main thread once the browser is done.
"""

import csv
import io
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from customers.roles import COMPLIANCE
from tests.consent.conftest import change
from tests.e2e.browser import in_a_browser, screenshot
from tests.factories import CustomerFactory

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]


@pytest.fixture
def officer(django_user_model):
    user = django_user_model.objects.create_user("compliance-e2e", password="e2e-password", is_staff=True)
    user.groups.add(Group.objects.get(name=COMPLIANCE))
    return user


def test_compliance_sees_the_consent_on_the_customer_page_and_exports_it_for_an_audit(live_server, officer):
    ann = CustomerFactory(
        email="ann@example.com", first_name="Ann", last_name="Lee", preferences={"email_opt_in": True}
    )
    change(ann, "marketing_email", "revoked", ip_address="203.0.113.8", user_agent="Shop/2")
    CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Roe")
    seen = {}

    def scenario(page, url, found):
        page.goto(f"{url}/admin/customers/customer/{ann.pk}/change/")
        seen["state"] = page.locator("#consent_states-group").inner_text()
        page.locator("#consent_records-group summary").first.click()  # the full record is folded away
        seen["record"] = page.locator("#consent_records-group").inner_text()
        screenshot(page, "customer-consent-inlines")

        page.goto(f"{url}/admin/customers/customer/")
        page.fill("#searchbar", "ann@example.com")
        with page.expect_navigation():
            page.press("#searchbar", "Enter")
        page.check("#result_list tbody tr input.action-select")
        page.select_option("select[name=action]", "export_consent_records")
        with page.expect_download() as download:
            page.click("button[name=index]")
        seen["csv"] = Path(download.value.path()).read_text()

        page.goto(f"{url}/admin/consent/consentrecord/?status__exact=revoked")
        seen["revoked_rows"] = page.locator("#result_list tbody tr").all_inner_texts()
        screenshot(page, "consent-record-list")

    in_a_browser(live_server, "compliance-e2e", scenario)

    assert "marketing_email" in seen["state"] and "revoked" in seen["state"]
    assert "203.0.113.8" in seen["record"]
    rows = list(csv.DictReader(io.StringIO(seen["csv"])))
    assert {row["customer_id"] for row in rows} == {str(ann.pk)}
    assert any(row["status"] == "revoked" and row["ip_address"] == "203.0.113.8" for row in rows)
    assert len(seen["revoked_rows"]) == 1 and ann.customer_number in seen["revoked_rows"][0]
