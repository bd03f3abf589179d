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


# ---------------------------------------------------------------- real writes, per group

WRITES = {  # what each group's attempt actually changes
    CUSTOMER_SERVICE: {"page note", "list note", "change customer", "merge"},
    COMPLIANCE: {"page note", "list note"},  # compliance notes included, the customer itself unchanged
    MARKETING: set(),
    ADMINISTRATOR: {"page note", "list note", "change customer", "merge", "import"},
}


def _notes_prefix(page):
    from customers.models import CustomerNote

    return next(f.formset.prefix for f in page.context["inline_admin_formsets"] if f.formset.model is CustomerNote)


@pytest.mark.parametrize("group", list(WRITES))
def test_each_group_writes_exactly_what_it_may(client, staff, group):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from customers.models import Customer, CustomerNote
    from tests.customers.test_admin import _change_form_data

    customer = CustomerFactory(first_name="Ann", phone="+14155552671")
    twin = CustomerFactory(first_name="Ann", phone="+14155552671")
    user = staff(group, f"writer-{group}")
    client.force_login(user)
    may_compliance = group in (COMPLIANCE, ADMINISTRATOR)
    kind = "compliance" if may_compliance else "support"
    done = set()
    page_url = f"{CHANGELIST}{customer.pk}/change/"

    # a note on the customer page, in the same POST as a change of the name
    page = client.get(page_url)
    data = _change_form_data(client, customer)
    if group != MARKETING:
        prefix = _notes_prefix(page)
        data.update({f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-0-kind": kind,
                     f"{prefix}-0-text": "Written on the page"})
    data["first_name"] = "Changed"
    response = client.post(page_url, data)
    assert response.status_code in (302, 403), response.context and response.context["errors"]
    if CustomerNote.objects.filter(customer=customer, text="Written on the page", kind=kind).exists():
        done.add("page note")
    customer.refresh_from_db()
    if customer.first_name == "Changed":
        done.add("change customer")
    if group == COMPLIANCE:  # its page save wrote the note and nothing else
        assert customer.version == 1 and Customer.history.filter(id=customer.pk).count() == 1

    # a note from the notes list
    response = client.post(
        "/admin/customers/customernote/add/", {"customer": str(twin.pk), "kind": kind, "text": "Written in the list"}
    )
    assert response.status_code in (302, 403)
    if CustomerNote.objects.filter(customer=twin, text="Written in the list", kind=kind).exists():
        done.add("list note")
    if "list note" in done:
        note = CustomerNote.objects.get(customer=twin, text="Written in the list")
        assert note.author == user and note.history.get().history_change_reason == "note added"
        edited = client.post(
            f"/admin/customers/customernote/{note.pk}/change/", {"kind": kind, "text": "Edited in the list"}
        )
        assert edited.status_code == 302
        note.refresh_from_db()
        assert note.text == "Edited in the list"

    # merge the twins
    merge_url = f"{CHANGELIST}merge/?a={customer.pk}&b={twin.pk}"
    response = client.post(merge_url, {"survivor": "a", "reason": "same"})
    assert response.status_code in (302, 403)
    twin.refresh_from_db()
    if twin.status == "merged":
        done.add("merge")

    # import a customer
    upload = SimpleUploadedFile("c.csv", b"email,first_name,last_name\nimported@example.com,Imp,Orted\n")
    response = client.post(f"{CHANGELIST}import/", {"format": "0", "import_file": upload, "resource": "0"})
    assert response.status_code in (200, 403)
    if response.status_code == 200:
        confirm = response.context["confirm_form"]
        client.post(f"{CHANGELIST}process_import/", {name: confirm[name].value() for name in confirm.fields})
    if Customer.objects.filter(email="imported@example.com").exists():
        done.add("import")

    assert done == WRITES[group]
