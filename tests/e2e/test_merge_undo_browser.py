"""Undo a merge from its admin page by clicking, in a real browser (a form nested in Django's change form
would be dropped by the browser, and the click would submit the outer form instead)."""

import pytest

from customers import services
from customers.actor import Actor
from customers.models import Customer, CustomerMerge, CustomerNote
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


def test_a_rep_undoes_a_merge_by_clicking(live_server, django_user_model):
    rep = _staff(django_user_model, "rep-undo", CUSTOMER_SERVICE)
    survivor = CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee")
    merged = CustomerFactory(email="ann.lee@example.com", first_name="Anne", last_name="Lee")
    services.note_create(actor=Actor.for_staff(rep), customer_id=merged.pk, text="Moved to Berlin")
    merge = services.customer_merge(
        actor=Actor.for_staff(rep), survivor_id=survivor.pk, merged_id=merged.pk, choices={}, reason="same"
    )

    def scenario(page, url, found):
        page.goto(f"{url}/admin/customers/customermerge/{merge.pk}/change/")
        form = page.locator("form#undo-merge")
        assert form.count() == 1
        # the browser kept it as a form of its own, outside the change form
        found["nested"] = page.evaluate("() => !!document.querySelector('#undo-merge').parentElement.closest('form')")
        page.fill("#undo-merge-reason", "Not the same person")
        with page.expect_navigation():
            form.locator("input[type=submit]").click()
        page.wait_for_selector(".messagelist .success")
        found["message"] = page.inner_text(".messagelist")
        found["url"] = page.url
        screenshot(page, "merge-undone")

    found = in_a_browser(live_server, "rep-undo", scenario)
    assert found["nested"] is False
    assert "The merge was undone" in found["message"]
    assert found["url"].endswith(f"/admin/customers/customer/{merged.pk}/change/")
    merged.refresh_from_db()
    merge.refresh_from_db()
    assert merged.status == "active" and merged.merged_into_id is None
    assert merge.undone_at is not None and merge.undone_by == "staff:rep-undo"
    assert CustomerNote.objects.get().customer_id == merged.pk
    assert Customer.objects.get(pk=survivor.pk).status == "active"
    assert CustomerMerge.objects.count() == 1
