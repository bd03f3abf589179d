"""A rep in a real browser: finds a customer by part of a phone number, edits them, sees the history.

Playwright runs in a thread of its own (`in_a_browser`): its sync API in the test's thread would
swap that thread's database connection, and with it the serialized snapshot that every later
transactional test restores the migrations' data from.
"""

import pytest

from customers.models import Customer
from customers.roles import CUSTOMER_SERVICE
from tests.addresses.conftest import migrated_data_restored  # noqa: F401  (module fixture)
from tests.e2e.browser import in_a_browser, screenshot
from tests.e2e.test_backoffice_flow import _staff
from tests.factories import CustomerFactory

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]


def test_rep_finds_a_customer_by_partial_phone_edits_and_sees_history(live_server, django_user_model):
    _staff(django_user_model, "rep-e2e", CUSTOMER_SERVICE)
    ann = CustomerFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155552671")
    CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Stone", phone="+442079460123")

    def scenario(page, url, found):
        page.goto(f"{url}/admin/customers/customer/")
        page.fill("#searchbar", "555-2671")
        with page.expect_navigation():  # count the rows of the results page, not of the page being left
            page.press("#searchbar", "Enter")
        rows = page.locator("#result_list tbody tr")
        found["rows"] = [rows.nth(index).inner_text() for index in range(rows.count())]

        rows.first.locator("th a").click()
        page.wait_for_selector("#customer_form")
        screenshot(page, "customer-page")
        page.fill("#id_last_name", "Lee-Smith")
        page.click("input[name=_continue]")
        page.wait_for_selector(".messagelist .success")

        page.click("a.historylink")
        found["history"] = page.locator("#change-history").inner_text()
        screenshot(page, "customer-history")

    found = in_a_browser(live_server, "rep-e2e", scenario)
    assert len(found["rows"]) == 1 and "ann.lee@example.com" in found["rows"][0]
    assert "staff:rep-e2e" in found["history"] and "updated: last_name" in found["history"]
    assert Customer.objects.get(pk=ann.pk).last_name == "Lee-Smith"
