import importlib
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from customers import services
from customers.actor import Actor
from customers.models import Customer, CustomerStatusChange, OutboxEvent
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, GROUP_PERMISSIONS, MARKETING
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/customers/customer/"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("group", [CUSTOMER_SERVICE, COMPLIANCE, MARKETING, ADMINISTRATOR])
def test_every_group_opens_the_customer_pages_and_searches(client, staff, group):
    ann = CustomerFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155552671")
    CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Brown")
    client.force_login(staff(group))
    for url in [CHANGELIST, f"{CHANGELIST}{ann.pk}/change/"]:
        assert client.get(url).status_code == 200, url
    # past values need view_historicalcustomer, which Marketing does not hold
    assert client.get(f"{CHANGELIST}{ann.pk}/history/").status_code == (403 if group == MARKETING else 200)
    for term in ["lee", "ANN", "415 555 2671", ann.customer_number]:
        page = client.get(CHANGELIST, {"q": term})
        assert page.status_code == 200
        assert list(page.context["cl"].result_list) == [ann], term


def _granted_by_the_code() -> dict[str, set[str]]:
    """What the code gives each group: every `grant(apps, DEFINITION)` in our apps' data migrations (the
    first of them is `customers.roles.GROUP_PERMISSIONS`), read from the migration modules themselves."""
    granted: dict[str, set[str]] = {}
    for app_label in ["customers", "addresses", "consent", "segments", "privacy"]:
        for path in sorted((ROOT / app_label / "migrations").glob("0*.py")):
            for name in re.findall(r"grant\(apps, (\w+)\)", path.read_text()):
                definition = getattr(importlib.import_module(f"{app_label}.migrations.{path.stem}"), name)
                for group, dotted in definition.items():
                    granted.setdefault(group, set()).update(dotted)
    return granted


def _held(group: str) -> set[str]:
    permissions = Group.objects.get(name=group).permissions.values_list("content_type__app_label", "codename")
    return {f"{app_label}.{codename}" for app_label, codename in permissions}


# A few a group must never hold, whatever the definitions become.
NEVER = {
    CUSTOMER_SERVICE: {
        "customers.add_customer",
        "customers.delete_customer",
        "customers.suspend_customer",
        "customers.import_customer",
        "customers.view_accesslog",
        "customers.view_outboxevent",
        "customers.export_customer_personal_data",
        "customers.view_compliance_note",
        "privacy.approve_erasure",
    },
    COMPLIANCE: {
        "customers.change_customer",
        "customers.delete_customer",
        "customers.suspend_customer",
        "customers.merge_customer",
        "addresses.change_address",
        "segments.add_segment",
    },
    MARKETING: {
        "customers.change_customer",
        "customers.view_historicalcustomer",
        "customers.view_customernote",
        "addresses.view_historicaladdress",
        "consent.change_consentpurpose",
        "privacy.view_datasubjectrequest",
    },
}


def test_each_group_holds_exactly_what_the_code_grants_and_administrator_everything():
    granted = _granted_by_the_code()
    assert set(granted) == {CUSTOMER_SERVICE, COMPLIANCE, MARKETING}
    assert all(set(GROUP_PERMISSIONS[group]) <= granted[group] for group in GROUP_PERMISSIONS)  # roles.py is read
    for group, forbidden in NEVER.items():
        assert _held(group) == granted[group], group
        for dotted in forbidden:  # each one exists, so its absence means something
            app_label, codename = dotted.split(".")
            assert Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists(), dotted
        assert not _held(group) & forbidden, group
    everything = {f"{a}.{c}" for a, c in Permission.objects.values_list("content_type__app_label", "codename")}
    assert _held(ADMINISTRATOR) == everything


def test_marketing_cannot_change_a_customer(client, staff):
    customer = CustomerFactory(email="a@example.com", first_name="Ann")
    client.force_login(staff(MARKETING))
    page = client.get(f"{CHANGELIST}{customer.pk}/change/")
    assert b'name="first_name"' not in page.content  # read-only view
    response = client.post(f"{CHANGELIST}{customer.pk}/change/", {"first_name": "Hacked"})
    assert response.status_code == 403
    customer.refresh_from_db()
    assert customer.first_name == "Ann"


def _change_form_data(client, customer):
    page = client.get(f"{CHANGELIST}{customer.pk}/change/")
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name)
        if hasattr(field, "fields") and value:  # split date/time widgets post two parts
            data[f"{name}_0"], data[f"{name}_1"] = value.date().isoformat(), value.time().isoformat()
        else:
            data[name] = value if value is not None else ""
    data["tags"] = ",".join(customer.tags)
    data["metadata"] = "{}"
    data["custom_attributes"] = "{}"
    inline = page.context["inline_admin_formsets"][0].formset
    data.update(
        {
            f"{inline.prefix}-TOTAL_FORMS": "1",
            f"{inline.prefix}-INITIAL_FORMS": "1",
            f"{inline.prefix}-MIN_NUM_FORMS": "1",
            f"{inline.prefix}-MAX_NUM_FORMS": "1",
            f"{inline.prefix}-0-customer": str(customer.pk),
        }
    )
    prefs = customer.preferences
    for name in ["language", "currency", "timezone", "theme"]:
        data[f"{inline.prefix}-0-{name}"] = getattr(prefs, name)
    data[f"{inline.prefix}-0-custom"] = "{}"
    for name in ["notify_order_updates", "notify_system_alerts"]:
        data[f"{inline.prefix}-0-{name}"] = "on"
    for other in page.context["inline_admin_formsets"][1:]:
        fs = other.formset
        data.update(
            {
                f"{fs.prefix}-TOTAL_FORMS": "0",
                f"{fs.prefix}-INITIAL_FORMS": "0",
                f"{fs.prefix}-MIN_NUM_FORMS": "0",
                f"{fs.prefix}-MAX_NUM_FORMS": "1000",
            }
        )
    return {k: v for k, v in data.items() if v is not None and v is not False}


def test_rep_edit_goes_through_the_service(client, staff):
    customer = CustomerFactory(email="a@example.com", first_name="Ann")
    rep = staff(CUSTOMER_SERVICE, "rep1")
    client.force_login(rep)
    data = _change_form_data(client, customer)
    data.update({"first_name": "Anna", "phone": "+44 20 7946 0123", "preferences-0-theme": "dark"})
    response = client.post(f"{CHANGELIST}{customer.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    customer.refresh_from_db()
    assert customer.first_name == "Anna" and customer.phone == "+442079460123" and customer.version == 3
    assert customer.preferences.theme == "dark"
    event = OutboxEvent.objects.get(event_type="customer.updated.v1")
    assert event.metadata["actor"] == "staff:rep1"
    last = Customer.history.filter(id=customer.pk).latest("history_date")
    assert last.history_user == rep and last.history_actor == "staff:rep1"


def test_the_changelist_filters_list_only_the_matching_customers(client, staff):
    ann = CustomerFactory(email="ann@example.com", registration_source="mobile")
    bob = CustomerFactory(email="bob@example.com", customer_type="business", company_name="Acme")
    services.customer_change_status(actor=Actor.system("tests"), customer_id=bob.pk, status="inactive", reason="t")
    old = CustomerFactory(email="old@example.com")
    Customer.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=400))
    client.force_login(staff(CUSTOMER_SERVICE))

    def listed(query_string):
        page = client.get(CHANGELIST + query_string)
        assert page.status_code == 200, query_string
        return set(page.context["cl"].result_list)

    assert listed("") == {ann, bob, old}
    assert listed("?status__exact=inactive") == {bob}
    assert listed("?status__exact=active") == {ann, old}
    assert listed("?customer_type__exact=business") == {bob}
    assert listed("?customer_type__exact=individual") == {ann, old}
    assert listed("?registration_source__exact=mobile") == {ann}
    assert listed("?status__exact=active&registration_source__exact=mobile") == {ann}
    # The created date filter, through the links its own sidebar offers.
    page = client.get(CHANGELIST)
    (created,) = [spec for spec in page.context["cl"].filter_specs if spec.title == "created at"]
    links = {choice["display"]: choice["query_string"] for choice in created.choices(page.context["cl"])}
    assert listed(links["Past 7 days"]) == {ann, bob}
    assert listed(links["This year"]) == {ann, bob}
    assert listed(links["Any date"]) == {ann, bob, old}


@pytest.mark.parametrize("group", [CUSTOMER_SERVICE, ADMINISTRATOR])
def test_purchase_metrics_are_read_only_on_the_change_form(client, staff, group):
    customer = CustomerFactory(email="a@example.com", first_name="Ann")
    Customer.objects.filter(pk=customer.pk).update(order_count=3, total_spent=Decimal("120.00"))
    client.force_login(staff(group))
    page = client.get(f"{CHANGELIST}{customer.pk}/change/")
    assert b'name="order_count"' not in page.content and b'name="total_spent"' not in page.content
    data = _change_form_data(client, customer)
    data.update({"first_name": "Anna", "order_count": "999", "total_spent": "99999.00"})
    response = client.post(f"{CHANGELIST}{customer.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    customer.refresh_from_db()
    assert customer.first_name == "Anna"  # the form was saved, but not the metrics
    assert (customer.order_count, customer.total_spent) == (3, Decimal("120.00"))


def test_rep_sees_service_validation_on_the_field(client, staff):
    CustomerFactory(email="taken@example.com")
    customer = CustomerFactory(email="a@example.com")
    client.force_login(staff(CUSTOMER_SERVICE))
    data = _change_form_data(client, customer)
    data["email"] = "TAKEN@example.com"
    response = client.post(f"{CHANGELIST}{customer.pk}/change/", data)
    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors


def test_suspend_action_needs_a_reason_and_admin_rights(client, staff):
    customer = CustomerFactory(email="a@example.com")
    rep = staff(CUSTOMER_SERVICE)
    client.force_login(rep)
    changelist = client.get(CHANGELIST)
    action_form = changelist.context["action_form"]
    assert action_form is None or "suspend_customers" not in dict(action_form.fields["action"].choices)
    client.post(
        CHANGELIST,
        {
            "action": "suspend_customers",
            "_selected_action": [str(customer.pk)],
            "apply": "1",
            "reason": "rep tries anyway",
        },
    )
    customer.refresh_from_db()
    assert customer.status == "active"

    client.force_login(staff(ADMINISTRATOR, "boss"))
    action = {"action": "suspend_customers", "_selected_action": [str(customer.pk)]}
    confirm = client.post(CHANGELIST, action)
    assert confirm.status_code == 200 and b"reason" in confirm.content
    client.post(CHANGELIST, {**action, "apply": "1", "reason": ""})
    customer.refresh_from_db()
    assert customer.status == "active"
    client.post(CHANGELIST, {**action, "apply": "1", "reason": "chargeback fraud"})
    customer.refresh_from_db()
    assert customer.status == "suspended"
    change = CustomerStatusChange.objects.get(customer=customer)
    assert (change.reason, change.actor) == ("chargeback fraud", "staff:boss")
    reactivate = {
        "action": "reactivate_customers",
        "_selected_action": [str(customer.pk)],
        "apply": "1",
        "reason": "cleared",
    }
    client.post(CHANGELIST, reactivate)
    customer.refresh_from_db()
    assert customer.status == "active"


@pytest.mark.parametrize(
    ("field", "value"),
    [("currency", "ZZZ"), ("language", "not a language!"), ("timezone", "Mars/Olympus_Mons")],
)
def test_bad_preferences_show_on_the_inline_and_nothing_is_saved(client, staff, field, value):
    customer = CustomerFactory(email="a@example.com", first_name="Ann")
    client.force_login(staff(CUSTOMER_SERVICE))
    data = _change_form_data(client, customer)
    data.update({"first_name": "Anna", f"preferences-0-{field}": value})
    response = client.post(f"{CHANGELIST}{customer.pk}/change/", data)
    assert response.status_code == 200  # the form again, not a 500
    preferences_formset = response.context["inline_admin_formsets"][0].formset
    assert field in preferences_formset.forms[0].errors
    customer.refresh_from_db()
    assert customer.first_name == "Ann" and customer.version == 1
    assert not OutboxEvent.objects.filter(subject=str(customer.pk), event_type="customer.updated.v1").exists()
    defaults = {"currency": "USD", "language": "en", "timezone": "UTC"}
    assert getattr(customer.preferences, field) == defaults[field]


def test_good_preferences_are_normalized_by_the_service(client, staff):
    customer = CustomerFactory(email="a@example.com", first_name="Ann")
    client.force_login(staff(CUSTOMER_SERVICE))
    data = _change_form_data(client, customer)
    data.update({"preferences-0-currency": "eur", "preferences-0-timezone": "Europe/Berlin"})
    response = client.post(f"{CHANGELIST}{customer.pk}/change/", data)
    assert response.status_code == 302
    customer.preferences.refresh_from_db()
    assert customer.preferences.currency == "EUR" and customer.preferences.timezone == "Europe/Berlin"
