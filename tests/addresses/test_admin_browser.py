"""The address admin in a real browser (Playwright driving Debian's chromium), as a rep uses it.

Playwright's sync API runs in a thread of its own here: the session-scoped browser of tests/e2e
keeps an event loop running in the main thread, and a second sync Playwright there would refuse
to start. The database checks run in the main thread once the browser is done.
"""

import os
import threading
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from addresses.models import Address
from customers.roles import CUSTOMER_SERVICE
from tests.addresses.factories import make_address
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, LAUNCH_ARGS
from tests.factories import CustomerFactory

# The live server's ORM calls are synchronous; Playwright's loop would make Django's guard a false alarm.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]


def in_a_browser(live_server, username, scenario) -> None:
    """Log in as `username` and run `scenario(page, url)` in chromium, in a thread of its own."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: apt-get install chromium (the CI script does)")
    failures = []

    def run():
        try:
            with playwright_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
                try:
                    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    page.set_default_timeout(15000)
                    page.goto(f"{live_server.url}/admin/login/")
                    page.fill("#id_username", username)
                    page.fill("#id_password", "e2e-password")
                    page.click("input[type=submit]")
                    page.wait_for_selector("#user-tools")
                    scenario(page, live_server.url)
                finally:
                    browser.close()
        except BaseException as error:  # handed to the test's thread below
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the browser scenario did not finish"
    if failures:
        raise failures[0]


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


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

    def scenario(page, url):
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
