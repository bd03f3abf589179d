import pytest
from django.contrib.auth.models import Group

from customers.models import Customer
from customers.roles import CUSTOMER_SERVICE
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def rep(django_user_model):
    user = django_user_model.objects.create_user("rep-e2e", password="e2e-password", is_staff=True)
    user.groups.add(Group.objects.get(name=CUSTOMER_SERVICE))
    return user


def test_rep_finds_a_customer_by_partial_phone_edits_and_sees_history(page, live_server, login, rep, screenshot):
    ann = CustomerFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155552671")
    CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Stone", phone="+442079460123")
    login("rep-e2e")

    page.goto(f"{live_server.url}/admin/customers/customer/")
    page.fill("#searchbar", "555-2671")
    with page.expect_navigation():  # count the rows of the results page, not of the page being left
        page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "ann.lee@example.com" in rows.first.inner_text()

    rows.first.locator("th a").click()
    page.wait_for_selector("#customer_form")
    screenshot("customer-page")
    page.fill("#id_last_name", "Lee-Smith")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")

    page.click("a.historylink")
    history = page.locator("#change-history").inner_text()
    assert "staff:rep-e2e" in history and "updated: last_name" in history
    screenshot("customer-history")
    assert Customer.objects.get(pk=ann.pk).last_name == "Lee-Smith"
