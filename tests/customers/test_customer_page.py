"""The customer page (customer 360): what a rep sees, that opening it is logged, and a constant query count."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from consent import services as consent_services
from customers import services
from customers.actor import Actor
from customers.models import AccessLog, CustomerNote, CustomerOrder
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from privacy import services as privacy_services
from segments import services as segment_services
from tests.addresses.factories import make_address
from tests.customers.test_admin import _change_form_data
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
CHANGELIST = "/admin/customers/customer/"


def page_of(customer):
    return f"{CHANGELIST}{customer.pk}/change/"


def _grow(customer, rep, segment, n: int) -> None:
    """Give the customer n more of everything the page shows."""
    start = CustomerNote.objects.count()
    for index in range(n):
        services.note_create(actor=rep, customer_id=customer.pk, text=f"note {start + index}", is_pinned=index % 2 == 0)
        services.activity_track(actor=SYSTEM, customer_id=customer.pk, activity_type="page_view")
        services.customer_update(actor=rep, customer_id=customer.pk, changes={"tags": [f"t{start + index}"]})
        CustomerOrder.objects.create(
            order_id=f"o-{customer.pk}-{start + index}", customer=customer, total=10, currency="USD",
            status="completed", placed_at="2026-01-01T00:00:00Z", status_changed_at="2026-01-01T00:00:00Z",
        )
    for index in range(min(n, 4)):
        make_address(customer, label=f"a{start + index}", make_default=index == 0)
    for status in ("granted", "revoked") * n:  # the consent record grows too
        consent_services.consent_change(
            actor=SYSTEM, customer_id=customer.pk, purpose_code="marketing_email", status=status, source="web"
        )
    other = segment_services.segment_create(actor=SYSTEM, code=f"seg_{start}", name=f"Seg {start}")
    segment_services.segment_members_add(actor=SYSTEM, segment_id=other.pk, customer_ids=[customer.pk])


def test_the_page_shows_the_whole_customer_and_logs_the_access(client, staff):
    rep_user = staff(CUSTOMER_SERVICE, "rep1")
    rep = Actor.for_staff(rep_user)
    customer = CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee", phone="+14155552671")
    twin = CustomerFactory(email="ann.lee@example.org", phone="+14155552671")
    services.note_create(actor=rep, customer_id=customer.pk, text="Allergic to phone calls", is_pinned=True)
    services.note_create(actor=rep, customer_id=customer.pk, text="An ordinary note")
    make_address(customer, make_default=True, country="DE", label="Home")
    segment = segment_services.segment_create(actor=SYSTEM, code="vip_list", name="VIP list")
    segment_services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[customer.pk])
    privacy_services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="erasure")
    services.customer_set_processing_restriction(actor=SYSTEM, customer_id=customer.pk, restricted=True, reason="x")

    client.force_login(rep_user)
    response = client.get(page_of(customer))
    assert response.status_code == 200
    html = response.content.decode()
    page = response.context["customer_page"]
    assert {flag.label for flag in page["flags"]} == {
        "Processing restricted (Art. 18)",
        "Possible duplicate",
        "Erasure pending",
    }
    assert [note.text for note in page["pinned_notes"]] == ["Allergic to phone calls"]
    titles = [section.title for section in page["sections"]]
    assert titles == ["Contact", "Purchases", "Addresses", "Consent", "Segments", "Open privacy requests"]
    sections = {section.title: dict(section.rows) for section in page["sections"]}
    assert "Unter den Linden" in sections["Addresses"]["Default shipping"]
    assert sections["Segments"]["VIP list"].startswith("since")
    assert "erasure" in " ".join(sections["Open privacy requests"]).lower()
    assert "C0" in html and customer.customer_number in html and "Allergic to phone calls" in html
    assert dict(page["facts"])["Tier"]
    assert any(entry.what == "Address" for entry in page["history"])
    assert any(entry.what == "Note" and entry.who == "staff:rep1" for entry in page["history"])
    assert twin.customer_number  # the duplicate is flagged, not merged
    log = AccessLog.objects.get()
    assert (log.user_id, log.customer_id, log.action) == (rep_user.pk, customer.pk, "view")
    client.post(page_of(customer), _change_form_data(client, customer))
    assert AccessLog.objects.count() == 2  # the GET inside _change_form_data; the POST is not a view


def test_query_count_stays_constant_as_the_customer_grows(client, staff):
    user = staff(ADMINISTRATOR, "boss")
    rep = Actor.for_staff(user)
    customer = CustomerFactory(email="grow@example.com", first_name="Gro", last_name="Wing")
    segment = segment_services.segment_create(actor=SYSTEM, code="base_seg", name="Base")
    client.force_login(user)
    _grow(customer, rep, segment, 1)
    client.get(page_of(customer))  # warm caches (content types, permissions)
    with CaptureQueriesContext(connection) as small:
        assert client.get(page_of(customer)).status_code == 200
    _grow(customer, rep, segment, 6)
    with CaptureQueriesContext(connection) as large:
        assert client.get(page_of(customer)).status_code == 200
    assert CustomerNote.objects.filter(customer=customer).count() == 7
    assert len(large.captured_queries) == len(small.captured_queries), "\n".join(
        query["sql"][:150] for query in large.captured_queries
    )


def test_compliance_notes_never_reach_a_rep_on_the_page(client, staff):
    customer = CustomerFactory()
    compliance = staff(COMPLIANCE)
    services.note_create(
        actor=Actor.for_staff(compliance), customer_id=customer.pk, text="Regulator inquiry 42", kind="compliance",
        is_pinned=True,
    )
    client.force_login(staff(CUSTOMER_SERVICE))
    html = client.get(page_of(customer)).content.decode()
    assert "Regulator inquiry 42" not in html
    client.force_login(compliance)
    assert "Regulator inquiry 42" in client.get(page_of(customer)).content.decode()


def test_a_rep_adds_and_pins_a_note_on_the_page_through_the_service(client, staff):
    customer = CustomerFactory(email="a@example.com", first_name="Ann")
    rep = staff(CUSTOMER_SERVICE, "rep1")
    client.force_login(rep)
    data = _change_form_data(client, customer)
    page = client.get(page_of(customer))
    notes_formset = next(
        f.formset for f in page.context["inline_admin_formsets"] if f.formset.model is CustomerNote
    )
    prefix = notes_formset.prefix
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "1",
            f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-0-kind": "support",
            f"{prefix}-0-text": "Wants a callback",
            f"{prefix}-0-is_pinned": "on",
        }
    )
    response = client.post(page_of(customer), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    note = CustomerNote.objects.get(customer=customer)
    assert note.is_pinned and note.written_by == "staff:rep1" and note.author == rep
    assert CustomerNote.history.get(id=note.pk).history_change_reason == "pinned note added"


def test_merged_and_erased_customers_are_read_only(client, staff):
    admin_user = staff(ADMINISTRATOR)
    survivor, merged = CustomerFactory(), CustomerFactory()
    services.customer_merge(actor=Actor.for_staff(admin_user), survivor_id=survivor.pk, merged_id=merged.pk)
    client.force_login(admin_user)
    response = client.get(page_of(merged))
    assert response.status_code == 200
    assert b'name="first_name"' not in response.content
    flags = {flag.label for flag in response.context["customer_page"]["flags"]}
    assert f"Merged into {survivor.customer_number}" in flags


@pytest.mark.parametrize("group", [CUSTOMER_SERVICE, MARKETING])
def test_history_and_timeline_only_for_those_with_their_view_permission(client, staff, group):
    user = staff(group, f"viewer-{group}")
    customer = CustomerFactory(first_name="Ann")
    services.customer_update(actor=SYSTEM, customer_id=customer.pk, changes={"first_name": "Anna"})
    services.activity_track(actor=SYSTEM, customer_id=customer.pk, activity_type="page_view")
    client.force_login(user)
    client.get(page_of(customer))  # warm caches
    with CaptureQueriesContext(connection) as few:
        response = client.get(page_of(customer))
    html = response.content.decode()
    allowed = group == CUSTOMER_SERVICE
    assert user.has_perm("customers.view_historicalcustomer") is allowed
    assert user.has_perm("customers.view_customeractivity") is allowed
    assert ('id="recent-history"' in html) is allowed and ("Recent changes" in html) is allowed
    assert ('id="customer-timeline"' in html) is allowed
    assert (response.context["customer_page"]["history"] != []) is allowed
    assert client.get(f"{page_of(customer).removesuffix('change/')}history/").status_code == (200 if allowed else 403)
    for index in range(5):  # more activity and history: the same number of queries
        services.activity_track(actor=SYSTEM, customer_id=customer.pk, activity_type="page_view")
        services.customer_update(actor=SYSTEM, customer_id=customer.pk, changes={"tags": [f"t{index}"]})
    with CaptureQueriesContext(connection) as more:
        client.get(page_of(customer))
    assert len(more.captured_queries) == len(few.captured_queries)


def test_the_timeline_on_the_page_is_paginated_within_its_section(client, staff):
    from customers import admin as customer_admin

    customer = CustomerFactory()
    size = customer_admin.TIMELINE_PAGE_SIZE
    for index in range(2 * size + 3):
        services.activity_track(
            actor=SYSTEM, customer_id=customer.pk, activity_type="page_view", summary=f"visit {index}"
        )
    from customers.models import CustomerActivity

    total = CustomerActivity.objects.filter(customer=customer).count()  # with the "registered" entry
    assert total > 2 * size
    client.force_login(staff(CUSTOMER_SERVICE))

    def timeline_of(url):
        response = client.get(url)
        assert response.status_code == 200
        return response.context["customer_page"]["timeline"], response.content.decode()

    first, html = timeline_of(page_of(customer))
    assert len(first["entries"]) == size and first["older_url"] and not first["newer_url"]
    assert 'id="timeline-pages"' in html and "timeline-older" in html
    assert first["older_url"].endswith("#customer-timeline")
    second, html = timeline_of(page_of(customer) + first["older_url"].split("#")[0])
    assert len(second["entries"]) == size and second["older_url"] and second["newer_url"] and second["newest_url"]
    third, _ = timeline_of(page_of(customer) + second["older_url"].split("#")[0])
    assert len(third["entries"]) == total - 2 * size and not third["older_url"] and third["newer_url"]
    seen = [entry.pk for page in (first, second, third) for entry in page["entries"]]
    assert len(seen) == len(set(seen)) == total  # every entry once
    back, _ = timeline_of(page_of(customer) + third["newer_url"].split("#")[0])
    assert [entry.pk for entry in back["entries"]] == [entry.pk for entry in second["entries"]]
    mangled, _ = timeline_of(page_of(customer) + "?timeline=garbage")
    assert [entry.pk for entry in mangled["entries"]] == [entry.pk for entry in first["entries"]]
