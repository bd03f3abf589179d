"""The address admin in a real browser (Playwright driving Debian's chromium), as a rep uses it.

Playwright's sync API runs in a thread of its own (`tests.e2e.browser.in_a_browser`); the database
checks run in the main thread once the browser is done.
"""

import os

import pytest
from django.contrib.auth.models import Group

from addresses.models import Address
from customers.roles import CUSTOMER_SERVICE
from tests.addresses.factories import make_address
from tests.e2e.browser import in_a_browser, screenshot
from tests.factories import CustomerFactory

# The live server's ORM calls are synchronous; Playwright's loop would make Django's guard a false alarm.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]


@pytest.fixture
def rep(django_user_model):
    user = django_user_model.objects.create_user("rep-addresses", password="e2e-password", is_staff=True)
    user.groups.add(Group.objects.get(name=CUSTOMER_SERVICE))
    return user


def test_rep_sees_the_defaults_inline_makes_another_default_and_finds_it_by_postal_code(live_server, rep):
    ann = CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee")
    make_address(ann, type="both", label="Home")
    office = make_address(ann, type="shipping", label="Office", city="Hamburg", postal_code="20095")
    seen = {}

    def scenario(page, url, found):
        page.goto(f"{url}/admin/customers/customer/{ann.pk}/change/")
        inline = page.locator("#addresses-group")
        seen["before"] = inline.inner_text()
        screenshot(page, "customer-addresses-inline")

        office_row = inline.locator(".inline-related", has=page.locator("input[value='Office']"))
        office_row.get_by_role("link", name="Make default…").click()
        page.wait_for_selector("text=Make this the default address")
        page.click("input[type=submit][value='Make default']")
        page.wait_for_selector(".messagelist .success")
        seen["back_on"] = page.url
        seen["first_inline"] = page.locator("#addresses-group .inline-related").first.inner_text()

        page.goto(f"{url}/admin/addresses/address/")
        page.fill("#searchbar", "2009")
        with page.expect_navigation():
            page.press("#searchbar", "Enter")
        seen["rows"] = page.locator("#result_list tbody tr").all_inner_texts()
        screenshot(page, "address-list-search")

    in_a_browser(live_server, "rep-addresses", scenario)

    assert "★ default shipping & billing" in seen["before"]
    assert seen["back_on"].endswith(f"/admin/customers/customer/{ann.pk}/change/")
    assert "★ default shipping" in seen["first_inline"] and "Office" in seen["first_inline"]
    assert len(seen["rows"]) == 1 and "Hamburg" in seen["rows"][0]
    office.refresh_from_db()
    assert office.is_default_shipping
    history = Address.history.filter(id=office.pk).latest("history_date")
    assert history.history_user == rep and history.history_change_reason == "default shipping"
