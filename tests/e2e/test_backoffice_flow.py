"""The back-office in a real browser: a rep's day with one customer, and a compliance officer's export.

Each scenario runs Playwright's sync API in a thread of its own (`tests.e2e.browser`); database
checks run in the main thread once the browser is done.
"""

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from addresses.models import Address
from customers.actor import Actor
from customers.models import AccessLog, CustomerNote
from customers.roles import COMPLIANCE, CUSTOMER_SERVICE
from privacy import services as privacy_services
from tests.addresses.conftest import migrated_data_restored  # noqa: F401  (module fixture)
from tests.addresses.factories import make_address
from tests.e2e.browser import in_a_browser, screenshot
from tests.factories import CustomerFactory

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]


def _staff(django_user_model, username, group):
    user = django_user_model.objects.create_user(username, password="e2e-password", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_rep_finds_opens_notes_pins_sets_a_default_and_sees_the_history(live_server, django_user_model):
    _staff(django_user_model, "rep-360", CUSTOMER_SERVICE)
    ann = CustomerFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155552671")
    CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Stone", phone="+442079460123")
    make_address(ann, type="shipping", label="Home", make_default=True)
    office = make_address(ann, type="shipping", label="Office", country="GB")

    def scenario(page, url, found):
        # find by a partial phone number, written as the caller says it
        page.goto(f"{url}/admin/customers/customer/")
        page.fill("#searchbar", "555 2671")
        with page.expect_navigation():
            page.press("#searchbar", "Enter")
        rows = page.locator("#result_list tbody tr")
        assert rows.count() == 1 and "ann.lee@example.com" in rows.first.inner_text()
        rows.first.locator("th a").click()

        # the customer page: who this is, in ten seconds
        page.wait_for_selector("#customer-360")
        assert page.inner_text("#customer-name") == "Ann Lee"
        assert page.inner_text("#customer-number") == ann.customer_number
        assert "Default shipping" in page.inner_text("[data-section=addresses]")
        screenshot(page, "customer-360-opened")

        # a pinned note
        page.select_option("#id_notes-0-kind", "support")
        page.fill("#id_notes-0-text", "Calls only after 6pm")
        page.check("#id_notes-0-is_pinned")
        page.click("input[name=_continue]")
        page.wait_for_selector(".messagelist .success")
        assert "Calls only after 6pm" in page.inner_text("#pinned-notes")

        # the office becomes the default shipping address
        page.click(f"a[href*='/admin/addresses/address/{office.pk}/set-default/']")
        page.check("input[name=type][value=shipping]")
        page.click("input[type=submit][value='Make default']")
        page.wait_for_selector("#customer-360")
        assert "Office" in page.inner_text("[data-section=addresses]")

        # and the change is in the history, with the rep's name
        found["history"] = page.inner_text("#recent-history")
        found["timeline"] = page.inner_text("#customer-timeline")
        screenshot(page, "customer-360")

    found = in_a_browser(live_server, "rep-360", scenario)
    assert "Address" in found["history"] and "default shipping" in found["history"]
    assert "staff:rep-360" in found["history"]
    assert "Note" in found["history"] and "pinned note added" in found["history"]
    assert "Default shipping address changed" in found["timeline"]
    note = CustomerNote.objects.get(customer=ann)
    assert note.is_pinned and note.written_by == "staff:rep-360"
    assert Address.objects.get(pk=office.pk).is_default_shipping
    assert AccessLog.objects.filter(customer=ann, action="view").count() >= 3


def test_compliance_starts_an_export_and_downloads_it(live_server, django_user_model):
    officer = _staff(django_user_model, "compliance-e2e", COMPLIANCE)
    ann = CustomerFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee")
    request, _ = privacy_services.privacy_request_file(
        actor=Actor.system("e2e"), customer_id=ann.pk, kind="access", notes="by phone"
    )

    def scenario(page, url, found):
        page.goto(f"{url}/admin/privacy/datasubjectrequest/")
        page.check(f"input[name=_selected_action][value='{request.pk}']")
        page.select_option("select[name=action]", "start_export")
        page.click("button[name=index]")
        page.wait_for_selector(".messagelist .success")
        screenshot(page, "compliance-export")
        with page.expect_download() as download_info:
            page.click("#result_list a:has-text('download')")
        found["document"] = json.loads(Path(download_info.value.path()).read_text())

    found = in_a_browser(live_server, "compliance-e2e", scenario)
    document = found["document"]
    assert document["customer_id"] == str(ann.pk)
    assert document["data"]["customers"]["profile"]["email"] == "ann.lee@example.com"
    actions = set(AccessLog.objects.filter(customer=ann, user=officer).values_list("action", flat=True))
    assert actions == {"export", "download"}
