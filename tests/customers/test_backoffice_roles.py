"""Each staff group logs in and gets exactly what the back-office screens need."""

import pytest
from django.contrib.auth.models import Group

from customers import services
from customers.actor import Actor
from customers.models import DuplicateCandidate
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from segments import services as segment_services
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/customers/customer/"

BACKOFFICE = {
    "view_customernote", "add_customernote", "change_customernote", "delete_customernote", "view_compliance_note",
    "view_duplicatecandidate", "change_duplicatecandidate", "merge_customer", "view_customermerge",
    "view_accesslog", "import_customer", "export_customer", "export_customer_personal_data",
    "view_customerexportjob", "change_customerexportjob",
}
EXPECTED = {
    CUSTOMER_SERVICE: {
        "view_customernote", "add_customernote", "change_customernote", "view_duplicatecandidate",
        "change_duplicatecandidate", "merge_customer", "view_customermerge", "export_customer",
        "view_customerexportjob",
    },
    COMPLIANCE: {
        "view_customernote", "add_customernote", "change_customernote", "view_compliance_note",
        "view_duplicatecandidate", "view_customermerge", "export_customer", "export_customer_personal_data",
        "view_customerexportjob",
    },
    MARKETING: {"export_customer", "view_customerexportjob"},
    ADMINISTRATOR: BACKOFFICE,
}


@pytest.mark.parametrize("group", list(EXPECTED))
def test_group_holds_exactly_the_backoffice_permissions(group):
    held = set(
        Group.objects.get(name=group).permissions.filter(content_type__app_label="customers").values_list(
            "codename", flat=True
        )
    )
    assert held & BACKOFFICE == EXPECTED[group]


def _actions(client):
    form = client.get(CHANGELIST).context["action_form"]
    return {name for name, _ in form.fields["action"].choices} if form else set()


# what each group may open: url -> expected status (200 seen, 403 refused)
def _screens(customer, candidate):
    merge = f"{CHANGELIST}merge/?a={candidate.customer_id}&b={candidate.other_id}"
    return {
        f"{CHANGELIST}{customer.pk}/change/": "page",
        "/admin/customers/customernote/": "notes",
        "/admin/customers/duplicatecandidate/": "duplicates",
        merge: "merge",
        "/admin/customers/customermerge/": "merges",
        "/admin/customers/accesslog/": "access log",
        f"{CHANGELIST}import/": "import",
        "/admin/customers/customerexportjob/": "exports",
    }


SEES = {
    CUSTOMER_SERVICE: {"page", "notes", "duplicates", "merge", "merges", "exports"},
    COMPLIANCE: {"page", "notes", "duplicates", "merges", "exports"},
    MARKETING: {"page", "exports"},
    ADMINISTRATOR: {"page", "notes", "duplicates", "merge", "merges", "access log", "import", "exports"},
}
ACTIONS = {
    CUSTOMER_SERVICE: {"merge_two_customers", "add_tag", "remove_tag", "deactivate_customers", "export_csv",
                       "export_xlsx"},
    COMPLIANCE: {"export_csv", "export_xlsx", "export_consent_records"},
    MARKETING: {"export_csv", "export_xlsx"},
    ADMINISTRATOR: {"merge_two_customers", "add_tag", "remove_tag", "deactivate_customers", "export_csv",
                    "export_xlsx", "suspend_customers", "reactivate_customers", "assign_to_segment",
                    "export_consent_records"},
}


@pytest.mark.parametrize("group", list(SEES))
def test_each_group_sees_and_does_exactly_its_part(client, staff, group):
    customer = CustomerFactory(phone="+14155552671")
    CustomerFactory(phone="+14155552671")
    candidate = DuplicateCandidate.objects.get()
    compliance_author = staff(COMPLIANCE, "author")
    services.note_create(
        actor=Actor.for_staff(compliance_author), customer_id=customer.pk, text="Subpoena received", kind="compliance"
    )
    services.note_create(actor=Actor.for_staff(compliance_author), customer_id=customer.pk, text="Likes blue")
    segment_services.segment_create(actor=Actor.system("tests"), code="static_list", name="Static list")
    user = staff(group, f"user-{group}")
    client.force_login(user)

    seen = set()
    for url, name in _screens(customer, candidate).items():
        status = client.get(url).status_code
        assert status in (200, 403, 302), (url, status)
        if status == 200:
            seen.add(name)
    assert seen == SEES[group]
    assert _actions(client) - {"delete_selected", ""} == ACTIONS[group]

    page = client.get(f"{CHANGELIST}{customer.pk}/change/").content.decode()
    assert ("Subpoena received" in page) is (group in (COMPLIANCE, ADMINISTRATOR))
    assert ("Likes blue" in page) is (group != MARKETING)  # marketing reads no notes
    if "notes" in seen:
        listing = client.get("/admin/customers/customernote/").content.decode()
        assert ("Subpoena received" in listing) is (group in (COMPLIANCE, ADMINISTRATOR))
