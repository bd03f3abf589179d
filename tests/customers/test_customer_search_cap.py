"""The customer list's search at its cap: counts, the select-all note, and a page read by its own ids."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.models import Customer
from customers.roles import CUSTOMER_SERVICE
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/customers/customer/"


def test_a_search_past_the_cap_says_more_than_the_cap_everywhere(client, staff, monkeypatch):
    from django.contrib import admin as django_admin

    from customers import admin as customer_admin

    lees = [CustomerFactory(email=f"{name}@example.com", last_name="Leeson") for name in ("ann", "bea", "cid")]
    exact = CustomerFactory(email="dan@example.com", last_name="Stone", external_id="lee")  # named by its id
    monkeypatch.setattr(customer_admin, "COUNT_CAP", 2)
    monkeypatch.setattr(django_admin.site._registry[Customer], "list_per_page", 1)
    client.force_login(staff(CUSTOMER_SERVICE))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, {"q": "lee", "p": 2})
    html = response.content.decode()
    assert response.context["cl"].result_count == 4  # the cap + 1, and the one named by its id: more than 2
    assert "More than 2 customers: add a word to narrow the search" in html
    assert "Select all matching customers (more than 2)" in html
    page = [q["sql"] for q in queries.captured_queries if "array_position" in q["sql"]]
    assert len(page) == 1 and page[0].count("::uuid") <= 3  # the page's one id: in IN (…) and in the array
    shown = list(response.context["cl"].result_list)
    assert len(shown) == 1 and shown[0] in [exact, *lees]
    first = client.get(CHANGELIST, {"q": "lee"})
    assert list(first.context["cl"].result_list) == [exact]  # named exactly: first, even past the cap
