"""Admin for compliance staff: purposes and versions (Compliance only), the record, the customer page, CSV export."""

import csv
import io

import pytest
from django.forms import MultiWidget
from django.utils import timezone

from consent.models import ConsentPurpose, ConsentRecord, PolicyVersion, notice_text_hash
from customers.models import AccessLog, CustomerPreferences
from tests.consent.conftest import change, new_version, state_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _logged_in(client, user):
    client.force_login(user)
    return client


def _form_data(response) -> dict:
    """The POST body a browser would send back for an admin change form, unchanged."""
    data = {}
    adminform = response.context["adminform"]
    forms = [adminform.form] + [f for inline in response.context["inline_admin_formsets"] for f in inline.formset]
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name, field in management.fields.items():
            data[management.add_prefix(name)] = management.initial.get(name, field.initial)
    for form in forms:
        for name, field in form.fields.items():
            value = form.initial.get(name, field.initial)
            if callable(value):
                value = value()
            if value is None:
                continue
            if isinstance(value, bool):
                if value:
                    data[form.add_prefix(name)] = "on"
                continue
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            if hasattr(value, "pk"):
                value = value.pk
            if isinstance(field.widget, MultiWidget):
                for index, part in enumerate(field.widget.decompress(value)):
                    data[f"{form.add_prefix(name)}_{index}"] = "" if part is None else str(part)
                continue
            data[form.add_prefix(name)] = value
    return data


# ---------------------------------------------------------------- purposes and policy versions


def test_compliance_publishes_a_policy_version_with_its_hash(client, compliance_user):
    purpose = ConsentPurpose.objects.get(code="marketing_sms")
    response = _logged_in(client, compliance_user).post(
        "/admin/consent/policyversion/add/",
        {
            "purpose": purpose.pk,
            "version": "2026-06",
            "notice_text": "New SMS wording.",
            "notice_url": "https://shop.example.com/legal/sms/2026-06",
            "text_hash": "",
            "effective_at_0": "2026-06-01",
            "effective_at_1": "00:00:00",
            "requires_reconsent": "on",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    version = PolicyVersion.objects.get(purpose=purpose, version="2026-06")
    assert version.text_hash == notice_text_hash("New SMS wording.")
    assert version.requires_reconsent is True
    assert version.history.latest().history_actor == f"staff:{compliance_user.username}"


def test_a_wrong_hash_is_refused_on_the_form(client, compliance_user):
    purpose = ConsentPurpose.objects.get(code="marketing_sms")
    response = _logged_in(client, compliance_user).post(
        "/admin/consent/policyversion/add/",
        {
            "purpose": purpose.pk,
            "version": "2026-07",
            "notice_text": "Wording.",
            "text_hash": "0" * 64,
            "effective_at_0": "2026-07-01",
            "effective_at_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert "text_hash" in response.context["adminform"].form.errors


def test_marketing_can_never_be_implicit(client, compliance_user):
    purpose = ConsentPurpose.objects.get(code="marketing_email")
    page = _logged_in(client, compliance_user).get(f"/admin/consent/consentpurpose/{purpose.pk}/change/")
    data = _form_data(page)
    data["allows_implicit"] = "on"
    response = client.post(f"/admin/consent/consentpurpose/{purpose.pk}/change/", data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert ConsentPurpose.objects.get(pk=purpose.pk).allows_implicit is False


def test_compliance_edits_a_purpose_through_the_service(client, compliance_user):
    purpose = ConsentPurpose.objects.get(code="profiling")
    page = _logged_in(client, compliance_user).get(f"/admin/consent/consentpurpose/{purpose.pk}/change/")
    data = _form_data(page)
    data["default_validity_months"] = 6
    response = client.post(f"/admin/consent/consentpurpose/{purpose.pk}/change/", data)
    assert response.status_code == 302
    purpose.refresh_from_db()
    assert purpose.default_validity_months == 6
    assert purpose.history.latest().history_actor == f"staff:{compliance_user.username}"


@pytest.mark.parametrize("who", ["rep_user", "marketing_user"])
def test_only_compliance_may_edit_purposes_and_versions(client, request, who):
    user = request.getfixturevalue(who)
    purpose = ConsentPurpose.objects.get(code="profiling")
    client = _logged_in(client, user)
    assert client.get(f"/admin/consent/consentpurpose/{purpose.pk}/change/").status_code == 200  # may look
    response = client.post(f"/admin/consent/consentpurpose/{purpose.pk}/change/", {"name": "Hacked"})
    assert response.status_code == 403
    assert client.get("/admin/consent/policyversion/add/").status_code == 403
    assert ConsentPurpose.objects.get(pk=purpose.pk).name == "Profiling"


def test_nobody_deletes_purposes_versions_or_records(client, admin_user, customer):
    client = _logged_in(client, admin_user)  # a superuser
    purpose = ConsentPurpose.objects.get(code="profiling")
    record = ConsentRecord.objects.filter(customer_id=customer.pk).first()
    assert client.get(f"/admin/consent/consentpurpose/{purpose.pk}/delete/").status_code == 403
    version = purpose.policy_versions.first()
    assert client.get(f"/admin/consent/policyversion/{version.pk}/delete/").status_code == 403
    assert client.get(f"/admin/consent/consentrecord/{record.pk}/delete/").status_code == 403
    assert client.get("/admin/consent/consentrecord/add/").status_code == 403


def test_the_wording_of_a_version_in_use_is_read_only(client, compliance_user, customer):
    version = state_of(customer, "marketing_email").policy_version  # used by the sign-up record
    page = _logged_in(client, compliance_user).get(f"/admin/consent/policyversion/{version.pk}/change/")
    assert "notice_text" not in page.context["adminform"].form.fields
    data = _form_data(page)
    data["requires_reconsent"] = "on"
    data["notice_text"] = "Rewritten after the fact"
    assert client.post(f"/admin/consent/policyversion/{version.pk}/change/", data).status_code == 302
    version.refresh_from_db()
    assert version.requires_reconsent is True
    assert version.notice_text != "Rewritten after the fact"


# ---------------------------------------------------------------- the record


def test_the_record_list_filters_by_purpose_state_source_and_date(client, compliance_user):
    customer = CustomerFactory()
    change(customer, "marketing_sms", "granted", source="mobile")
    purpose = ConsentPurpose.objects.get(code="marketing_sms")
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    response = _logged_in(client, compliance_user).get(
        "/admin/consent/consentrecord/",
        {
            "purpose__id__exact": purpose.pk,
            "status__exact": "granted",
            "source__exact": "mobile",
            "occurred_at__gte": today,
            "q": customer.customer_number,
        },
    )
    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert len(shown) == 1 and shown[0].customer_id == customer.pk
    assert customer.customer_number in response.content.decode()


def test_the_record_is_read_only_in_the_admin(client, compliance_user, customer):
    record = ConsentRecord.objects.filter(customer_id=customer.pk).first()
    client = _logged_in(client, compliance_user)
    page = client.get(f"/admin/consent/consentrecord/{record.pk}/change/")
    assert page.status_code == 200
    assert client.post(f"/admin/consent/consentrecord/{record.pk}/change/", {"status": "revoked"}).status_code == 403


def test_needs_renewal_filter(client, compliance_user):
    flagged = CustomerFactory(preferences={"email_opt_in": True})
    new_version("marketing_email", "2026-01", days_ago=1, requires_reconsent=True)
    response = _logged_in(client, compliance_user).get("/admin/consent/consentstate/", {"needs_renewal": "yes"})
    assert response.status_code == 200
    assert [(s.customer_id, s.purpose.code) for s in response.context["cl"].result_list] == [
        (flagged.pk, "marketing_email")
    ]


# ---------------------------------------------------------------- the customer page


def test_the_customer_page_shows_consent_state_and_record_read_only(client, rep_user):
    customer = CustomerFactory(preferences={"email_opt_in": True})
    response = _logged_in(client, rep_user).get(f"/admin/customers/customer/{customer.pk}/change/")
    assert response.status_code == 200
    inlines = {type(i.opts).__name__: i for i in response.context["inline_admin_formsets"]}
    assert {"ConsentStateInline", "ConsentRecordInline"} <= set(inlines)
    assert len(inlines["ConsentStateInline"].formset.forms) == 8
    assert not inlines["ConsentRecordInline"].has_change_permission
    body = response.content.decode()
    assert "consent record" in body.lower() and "marketing_email" in body


def test_the_add_page_has_no_consent_inlines(client, admin_user):
    response = _logged_in(client, admin_user).get("/admin/customers/customer/add/")
    assert response.status_code == 200
    names = {type(i.opts).__name__ for i in response.context["inline_admin_formsets"]}
    assert not names & {"ConsentStateInline", "ConsentRecordInline"}


def test_a_rep_switching_an_opt_in_on_the_customer_page_records_consent(client, rep_user):
    customer = CustomerFactory()
    page = _logged_in(client, rep_user).get(f"/admin/customers/customer/{customer.pk}/change/")
    data = _form_data(page)
    prefix = next(
        i.formset.prefix for i in page.context["inline_admin_formsets"] if i.formset.model is CustomerPreferences
    )
    data[f"{prefix}-0-sms_opt_in"] = "on"
    response = client.post(f"/admin/customers/customer/{customer.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    record = state_of(customer, "marketing_sms").last_record
    assert (record.status, record.source, record.actor) == ("granted", "admin", f"staff:{rep_user.username}")
    assert record.reason


def _export(client, customers):
    return client.post(
        "/admin/customers/customer/",
        {"action": "export_consent_records", "_selected_action": [str(c.pk) for c in customers]},
    )


def test_compliance_exports_the_selected_customers_records_as_csv(client, compliance_user):
    chosen = CustomerFactory(preferences={"email_opt_in": True})
    change(chosen, "marketing_email", "revoked", ip_address="203.0.113.5", user_agent="=cmd|' /C calc'!A0")
    left_out = CustomerFactory()
    response = _export(_logged_in(client, compliance_user), [chosen])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["customer_id"] for row in rows} == {str(chosen.pk)}
    assert str(left_out.pk) not in {row["customer_id"] for row in rows}
    assert len(rows) == ConsentRecord.objects.filter(customer_id=chosen.pk).count() == 9
    revoked = next(row for row in rows if row["status"] == "revoked")
    # who, what, when, how, which wording
    assert revoked["customer_number"] == chosen.customer_number and revoked["recorded_by"] == "token:storefront"
    assert (revoked["purpose"], revoked["previous_status"]) == ("marketing_email", "granted")
    assert revoked["occurred_at"]
    assert (revoked["source"], revoked["ip_address"]) == ("web", "203.0.113.5")
    assert revoked["user_agent"].startswith("'=")  # a spreadsheet will not run it
    assert revoked["policy_version"] == "2025-01" and len(revoked["policy_text_hash"]) == 64
    assert revoked["policy_notice_text"]


def test_a_rep_cannot_export(client, rep_user):
    customer = CustomerFactory()
    page = _logged_in(client, rep_user).get("/admin/customers/customer/")
    assert "export_consent_records" not in page.content.decode()
    response = _export(client, [customer])
    assert not response.get("Content-Type", "").startswith("text/csv")


def test_compliance_exports_selected_records_from_the_record_list(client, compliance_user, customer):
    records = list(ConsentRecord.objects.filter(customer_id=customer.pk)[:3])
    response = _logged_in(client, compliance_user).post(
        "/admin/consent/consentrecord/",
        {"action": "export_csv", "_selected_action": [str(r.pk) for r in records]},
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["record_id"] for row in rows} == {str(r.pk) for r in records}
    # Reading a customer's consent proof is access to their personal data: logged, ids only.
    logged = AccessLog.objects.filter(user=compliance_user)
    assert list(logged.values_list("customer_id", "action", "reference")) == [
        (customer.pk, "export", "consent-records")
    ]


# ---------------------------------------------------------------- the service's refusals are form errors, never a 500

_AT = {"effective_at_0": "2026-07-01", "effective_at_1": "00:00:00"}
REFUSED = [
    (
        "policyversion",
        {"version": "v9", "notice_url": "https://shop.example.com/legal/v9", "text_hash": "", **_AT},
        "notice_text",
    ),
    ("policyversion", {"version": "   ", "notice_text": "Wording.", **_AT}, "version"),
    ("consentpurpose", {"code": "surveys", "name": "   ", "display_order": 1}, "name"),
    (
        "consentpurpose",
        {"code": "surveys", "name": "S", "display_order": 1, "default_validity_months": 0},
        "default_validity_months",
    ),
    ("consentpurpose", {"code": "history", "name": "S", "display_order": 1}, "code"),
]


@pytest.mark.parametrize(("model", "data", "field"), REFUSED, ids=[f"{m}-{f}" for m, _, f in REFUSED])
def test_a_refusal_by_the_service_is_shown_on_the_form(client, compliance_user, model, data, field):
    client = _logged_in(client, compliance_user)
    client.raise_request_exception = False
    if model == "policyversion":
        data = {"purpose": ConsentPurpose.objects.get(code="marketing_sms").pk, **data}
    versions, purposes = PolicyVersion.objects.count(), ConsentPurpose.objects.count()
    response = client.post(f"/admin/consent/{model}/add/", data)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert (PolicyVersion.objects.count(), ConsentPurpose.objects.count()) == (versions, purposes)


def test_a_purpose_change_the_service_refuses_is_shown_on_the_form(client, compliance_user):
    client = _logged_in(client, compliance_user)
    client.raise_request_exception = False
    purpose = ConsentPurpose.objects.get(code="profiling")
    page = client.get(f"/admin/consent/consentpurpose/{purpose.pk}/change/")
    data = {**_form_data(page), "name": "   "}
    response = client.post(f"/admin/consent/consentpurpose/{purpose.pk}/change/", data)
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert ConsentPurpose.objects.get(pk=purpose.pk).name == "Profiling"


def test_the_consent_admin_reaches_customers_through_their_selectors():
    import ast
    import inspect

    from consent.admin import export, records

    for module in (records, export):
        source = inspect.getsource(module)
        assert "get_model" not in source, module.__name__
        imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
        assert "customers.models" not in imported


def test_the_record_list_finds_a_customer_by_number_or_email(client, compliance_user):
    customer = CustomerFactory()
    other = CustomerFactory()
    client = _logged_in(client, compliance_user)
    for term in (customer.customer_number, customer.email.upper()):
        page = client.get("/admin/consent/consentrecord/", {"q": term})
        shown = {record.customer_id for record in page.context["cl"].result_list}
        assert shown == {customer.pk}, term
        assert other.pk not in shown
