"""The admin: addresses inline on the customer page and the staff address list, every write via the services."""

import pytest
from django import forms
from django.contrib.auth.models import Group

from addresses.models import MAX_ACTIVE_ADDRESSES, Address
from customers.models import OutboxEvent
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from tests.addresses.factories import make_address

pytestmark = pytest.mark.django_db
CUSTOMERS = "/admin/customers/customer/"
ADDRESSES = "/admin/addresses/address/"


@pytest.fixture
def staff(django_user_model):
    def make(group_name, username=None):
        user = django_user_model.objects.create_user(
            username or group_name.lower().replace(" ", "_"), password="x", is_staff=True
        )
        user.groups.add(Group.objects.get(name=group_name))
        return user

    return make


@pytest.fixture
def rep(client, staff):
    user = staff(CUSTOMER_SERVICE, "rep1")
    client.force_login(user)
    return user


def post_data(page) -> dict:
    """What the browser would post back for the page as shown: main form and every inline formset."""
    data = {}

    def add(form):
        for bound in form:
            if bound.field.disabled:
                continue
            widget, value = bound.field.widget, bound.value()
            if isinstance(widget, forms.MultiWidget):
                parts = value if isinstance(value, list) else widget.decompress(value)
                for index, part in enumerate(parts):
                    data[f"{bound.html_name}_{index}"] = widget.widgets[index].format_value(part) or ""
            elif isinstance(widget, forms.CheckboxInput):
                if value:
                    data[bound.html_name] = "on"
            else:
                formatted = widget.format_value(value)
                data[bound.html_name] = "" if formatted is None else formatted

    add(page.context["adminform"].form)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        add(formset.management_form)
        for form in formset.forms:
            add(form)
    return data


def add_inline_address(data: dict, **values) -> dict:
    index = int(data["addresses-TOTAL_FORMS"])
    data["addresses-TOTAL_FORMS"] = str(index + 1)
    defaults = {"type": "shipping", "first_name": "Ann", "last_name": "Lee", "country": "DE"}
    for name, value in (defaults | values).items():
        data[f"addresses-{index}-{name}"] = value
    return data


def inline_index(page, address) -> int:
    formset = next(i.formset for i in page.context["inline_admin_formsets"] if i.formset.model is Address)
    return next(n for n, form in enumerate(formset.forms) if form.instance.pk == address.pk)


def save_customer_page(client, customer, change) -> object:
    page = client.get(f"{CUSTOMERS}{customer.pk}/change/")
    data = post_data(page)
    change(data, page)
    return client.post(f"{CUSTOMERS}{customer.pk}/change/", data)


def form_errors(response) -> str:
    if response.context is None:
        return ""
    errors = [response.context["adminform"].form.errors]
    errors += [inline.formset.errors for inline in response.context["inline_admin_formsets"]]
    errors += [inline.formset.non_form_errors() for inline in response.context["inline_admin_formsets"]]
    return str(errors)


class TestCustomerPageInline:
    @pytest.mark.parametrize("group", [CUSTOMER_SERVICE, COMPLIANCE, MARKETING, ADMINISTRATOR])
    def test_every_group_sees_the_addresses_with_the_defaults_marked(self, client, staff, customer, group):
        make_address(customer, type="both", label="Home")
        make_address(customer, label="Office", city="Hamburg", postal_code="20095")
        deleted = make_address(customer, label="Gone away")
        Address.objects.filter(pk=deleted.pk).update(deleted_at="2026-01-01T00:00Z")
        client.force_login(staff(group))
        page = client.get(f"{CUSTOMERS}{customer.pk}/change/")
        assert page.status_code == 200
        html = page.content.decode()
        assert "★ default shipping &amp; billing" in html or "★ default shipping & billing" in html
        assert "Hamburg" in html and "Gone away" not in html

    def test_an_unchanged_save_changes_no_address(self, client, rep, customer):
        address = make_address(customer)
        address_events = OutboxEvent.objects.filter(event_type__contains="address")
        count, history = address_events.count(), address.history.count()
        response = save_customer_page(client, customer, lambda data, page: None)
        assert response.status_code == 302, form_errors(response)
        assert address_events.count() == count and address.history.count() == history

    def test_adding_an_address_goes_through_the_service(self, client, rep, customer):
        response = save_customer_page(
            client,
            customer,
            lambda data, page: add_inline_address(data, line1="Hauptstr. 1", city="Köln", postal_code="50667"),
        )
        assert response.status_code == 302, form_errors(response)
        address = Address.objects.get(customer=customer)
        assert address.is_default_shipping and address.is_validated  # the first one: the default
        event = OutboxEvent.objects.get(event_type="customer.address.added.v1")
        assert event.metadata["actor"] == "staff:rep1"
        created = address.history.earliest("history_date")
        assert created.history_user == rep and created.history_actor == "staff:rep1"

    def test_editing_normalizes_and_records(self, client, rep, customer):
        address = make_address(customer, country="US")

        def change(data, page):
            index = inline_index(page, address)
            data[f"addresses-{index}-state"] = "new york"
            data[f"addresses-{index}-city"] = "New York"
            data[f"addresses-{index}-postal_code"] = "10001"

        response = save_customer_page(client, customer, change)
        assert response.status_code == 302, form_errors(response)
        address.refresh_from_db()
        assert (address.state, address.postal_code) == ("NY", "10001")
        event = OutboxEvent.objects.get(event_type="customer.address.updated.v1")
        assert event.data["changed_fields"] == ["city", "postal_code", "state"]

    def test_service_validation_shows_on_the_inline_field(self, client, rep, customer):
        address = make_address(customer)

        def change(data, page):
            data[f"addresses-{inline_index(page, address)}-postal_code"] = "94043-1351"

        response = save_customer_page(client, customer, change)
        assert response.status_code == 200
        formset = next(i.formset for i in response.context["inline_admin_formsets"] if i.formset.model is Address)
        assert "postal_code" in formset.errors[inline_index(response, address)]
        address.refresh_from_db()
        assert address.postal_code == "10117"

    def test_deleting_in_the_inline_soft_deletes_and_passes_the_default(self, client, rep, customer):
        default = make_address(customer, label="Default")
        other = make_address(customer, label="Other")

        def change(data, page):
            data[f"addresses-{inline_index(page, default)}-DELETE"] = "on"

        response = save_customer_page(client, customer, change)
        assert response.status_code == 302, form_errors(response)
        default.refresh_from_db()
        other.refresh_from_db()
        assert default.deleted_at is not None and other.is_default_shipping
        assert OutboxEvent.objects.filter(event_type="customer.address.removed.v1").count() == 1

    def test_make_default_in_the_inline(self, client, rep, customer):
        default = make_address(customer, label="Default")
        other = make_address(customer, label="Other")

        def change(data, page):
            data[f"addresses-{inline_index(page, other)}-make_default"] = "on"

        response = save_customer_page(client, customer, change)
        assert response.status_code == 302, form_errors(response)
        default.refresh_from_db()
        other.refresh_from_db()
        assert other.is_default_shipping and not default.is_default_shipping

    def test_the_limit_holds_in_the_inline(self, client, rep, customer):
        for number in range(MAX_ACTIVE_ADDRESSES - 1):
            make_address(customer, label=f"#{number}")

        def change(data, page):
            add_inline_address(data, line1="A 1", city="Köln", postal_code="50667")
            add_inline_address(data, line1="B 2", city="Köln", postal_code="50667")

        response = save_customer_page(client, customer, change)
        assert response.status_code == 200
        assert "at most 10 addresses" in form_errors(response)
        assert Address.objects.filter(customer=customer).count() == MAX_ACTIVE_ADDRESSES - 1

    def test_marketing_cannot_change_addresses(self, client, staff, customer):
        address = make_address(customer)
        client.force_login(staff(MARKETING))
        page = client.get(f"{CUSTOMERS}{customer.pk}/change/")
        assert b'name="addresses-0-line1"' not in page.content
        assert client.post(f"{ADDRESSES}{address.pk}/change/", {"label": "x"}).status_code == 403
        assert client.post(f"{ADDRESSES}{address.pk}/set-default/", {"type": "shipping"}).status_code == 403


class TestAddressList:
    def test_search_by_postal_code_and_city(self, client, rep, customer, other_customer):
        berlin = make_address(customer, city="Berlin", postal_code="10117")
        munich = make_address(other_customer, city="München", postal_code="80331")
        london = make_address(other_customer, country="GB", label="London")
        for term, expected in [
            ("10117", [berlin]),
            ("101", [berlin]),
            ("803", [munich]),
            ("münch", [munich]),
            ("BERLIN", [berlin]),
            ("sw1a", [london]),
        ]:
            page = client.get(ADDRESSES, {"q": term})
            assert page.status_code == 200
            assert list(page.context["cl"].result_list) == expected, term

    def test_active_by_default_deleted_on_request(self, client, rep, customer):
        active = make_address(customer)
        gone = make_address(customer, label="Gone")
        client.post(f"{ADDRESSES}{gone.pk}/delete/", {"post": "yes"})
        gone.refresh_from_db()
        assert gone.deleted_at is not None
        assert list(client.get(ADDRESSES).context["cl"].result_list) == [active]
        assert list(client.get(ADDRESSES, {"status": "deleted"}).context["cl"].result_list) == [gone]
        assert client.get(f"{ADDRESSES}{gone.pk}/change/").status_code == 200  # read-only view

    def test_add_and_change_go_through_the_service(self, client, rep, customer):
        page = client.get(f"{ADDRESSES}add/")
        assert page.status_code == 200
        data = {
            "customer": str(customer.pk),
            "type": "billing",
            "first_name": "Ann",
            "last_name": "Lee",
            "line1": "1 Rue de Rivoli",
            "city": "Paris",
            "postal_code": "75001",
            "country": "fr",
        }
        response = client.post(f"{ADDRESSES}add/", data)
        assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
        address = Address.objects.get(customer=customer)
        assert address.country == "FR" and address.is_default_billing
        assert response["Location"].startswith(ADDRESSES)
        change = client.get(f"{ADDRESSES}{address.pk}/change/")
        data = post_data(change)
        data["label"] = "Paris office"
        response = client.post(f"{ADDRESSES}{address.pk}/change/", data)
        assert response.status_code == 302
        address.refresh_from_db()
        assert address.label == "Paris office"
        assert [event.event_type for event in OutboxEvent.objects.filter(event_type__contains="address")] == [
            "customer.address.added.v1",
            "customer.default_address.changed.v1",
            "customer.address.updated.v1",
        ]

    def test_add_refuses_the_eleventh(self, client, rep, customer):
        for number in range(MAX_ACTIVE_ADDRESSES):
            make_address(customer, label=f"#{number}")
        data = {"customer": str(customer.pk), "type": "shipping", "last_name": "Lee", "line1": "x 1",
                "city": "Köln", "postal_code": "50667", "country": "DE"}  # fmt: skip
        response = client.post(f"{ADDRESSES}add/", data)
        assert response.status_code == 200
        assert "at most 10 addresses" in str(response.context["adminform"].form.errors)  # the service's rule

    def test_set_default_page_for_a_both_address(self, client, rep, customer):
        make_address(customer, type="shipping")
        billing = make_address(customer, type="billing")
        both = make_address(customer, type="both")
        url = f"{ADDRESSES}{both.pk}/set-default/?next={CUSTOMERS}{customer.pk}/change/"
        page = client.get(url)
        assert page.status_code == 200 and b"Billing only" in page.content
        response = client.post(url, {"type": "billing"})
        assert response.status_code == 302 and response["Location"] == f"{CUSTOMERS}{customer.pk}/change/"
        both.refresh_from_db()
        billing.refresh_from_db()
        assert both.is_default_billing and not both.is_default_shipping and not billing.is_default_billing

    def test_the_change_page_links_to_set_default(self, client, rep, customer):
        address = make_address(customer)
        page = client.get(f"{ADDRESSES}{address.pk}/change/")
        assert f"{ADDRESSES}{address.pk}/set-default/".encode() in page.content

    def test_make_default_action(self, client, rep, customer):
        make_address(customer)
        other = make_address(customer, label="Other")
        client.post(ADDRESSES, {"action": "make_default_action", "_selected_action": [str(other.pk)]})
        other.refresh_from_db()
        assert other.is_default_shipping

    def test_bulk_delete_action_uses_the_service(self, client, rep, customer):
        first = make_address(customer)
        second = make_address(customer, label="Second")
        client.post(ADDRESSES, {"action": "delete_addresses", "_selected_action": [str(first.pk), str(second.pk)]})
        assert not Address.objects.filter(customer=customer, deleted_at__isnull=True).exists()
        assert Address.objects.filter(customer=customer).count() == 2
        assert OutboxEvent.objects.filter(event_type="customer.address.removed.v1").count() == 2

    @pytest.mark.parametrize("group", [CUSTOMER_SERVICE, COMPLIANCE, MARKETING, ADMINISTRATOR])
    def test_every_group_opens_the_list_and_history(self, client, staff, customer, group):
        address = make_address(customer)
        client.force_login(staff(group))
        for url in [ADDRESSES, f"{ADDRESSES}{address.pk}/change/", f"{ADDRESSES}{address.pk}/history/"]:
            assert client.get(url).status_code == 200, url


def test_group_permissions():
    def perms(name):
        return set(Group.objects.get(name=name).permissions.filter(content_type__app_label="addresses").values_list(
            "codename", flat=True
        ))  # fmt: skip

    assert perms(CUSTOMER_SERVICE) == {
        "view_address",
        "add_address",
        "change_address",
        "delete_address",
        "view_historicaladdress",
    }
    assert perms(COMPLIANCE) == {"view_address", "view_historicaladdress"}
    assert perms(MARKETING) == {"view_address"}
    assert {"view_address", "change_address", "delete_address"} <= perms(ADMINISTRATOR)
