"""The marketing back-office: per-segment permissions (guardian), rule editor preview, recalculation,
members, overlap, CSV upload and export."""

import csv
import io
import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from guardian.shortcuts import assign_perm

from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from segments.models import Segment, SegmentCalculation, SegmentMembership
from tests.segments.conftest import SYSTEM, grant, make_customer, make_segment, members, recalculate

pytestmark = pytest.mark.django_db
ADMIN = "/admin/segments/segment/"
SPENDERS = {"field": "total_spent", "op": "gte", "value": 100}


def form_data(segment=None, **overrides):
    data = {
        "code": segment.code if segment else "new_one",
        "name": segment.name if segment else "New one",
        "description": segment.description if segment else "",
        "kind": segment.kind if segment else "static",
        "status": segment.status if segment and segment.status in ("active", "inactive") else "active",
        "rules": json.dumps(segment.rules) if segment and segment.rules is not None else "null",
        "requires_consent": segment.requires_consent if segment else "",
    }
    data.update(overrides)
    return data


@pytest.fixture
def marketer(staff):
    return staff(MARKETING, "marketer")


@pytest.fixture
def colleague(staff):
    return staff(MARKETING, "colleague")


@pytest.fixture
def two_segments():
    return make_segment(code="mine", name="Mine"), make_segment(code="theirs", name="Theirs")


def test_group_permissions():
    def perms(name):
        return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))

    assert {"view_segment", "add_segment", "view_segmentmembership", "export_segment_members"} <= perms(MARKETING)
    assert not {"change_segment", "delete_segment", "recalculate_segment"} & perms(MARKETING)
    assert "view_segmentmembership" in perms(CUSTOMER_SERVICE) and "add_segment" not in perms(CUSTOMER_SERVICE)
    assert "view_segment" in perms(COMPLIANCE)
    assert {"change_segment", "delete_segment", "recalculate_segment", "manage_segment_members"} <= perms(ADMINISTRATOR)


class TestGuardian:
    def test_marketing_edits_only_the_segments_granted_to_them(self, client, marketer, two_segments):
        mine, theirs = two_segments
        assign_perm("change_segment", marketer, mine)
        client.force_login(marketer)
        assert client.get(ADMIN).status_code == 200
        page = client.get(f"{ADMIN}{mine.pk}/change/")
        assert page.status_code == 200 and b'name="name"' in page.content
        response = client.post(f"{ADMIN}{mine.pk}/change/", form_data(mine, name="Mine, renamed"))
        assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
        mine.refresh_from_db()
        assert mine.name == "Mine, renamed"
        assert mine.history.first().history_user == marketer

        page = client.get(f"{ADMIN}{theirs.pk}/change/")
        assert page.status_code == 200 and b'name="name"' not in page.content  # read-only view
        assert client.post(f"{ADMIN}{theirs.pk}/change/", form_data(theirs, name="Hacked")).status_code == 403
        theirs.refresh_from_db()
        assert theirs.name == "Theirs"

    def test_the_creator_may_edit_what_they_created_but_not_delete(self, client, marketer, colleague):
        client.force_login(marketer)
        response = client.post(f"{ADMIN}add/", form_data(code="spring_sale", name="Spring sale"))
        assert response.status_code == 302
        created = Segment.objects.get(code="spring_sale")
        assert created.created_by == "staff:marketer"
        assert marketer.has_perm("segments.change_segment", created)
        assert not marketer.has_perm("segments.delete_segment", created)
        assert client.post(f"{ADMIN}{created.pk}/delete/", {"post": "yes"}).status_code == 403
        client.force_login(colleague)
        assert client.post(f"{ADMIN}{created.pk}/change/", form_data(created, name="Mine now")).status_code == 403

    def test_administrators_change_every_segment_and_manage_object_permissions(self, client, staff, two_segments):
        admin_user = staff(ADMINISTRATOR, "boss")
        client.force_login(admin_user)
        _, theirs = two_segments
        response = client.post(f"{ADMIN}{theirs.pk}/change/", form_data(theirs, description="checked"))
        assert response.status_code == 302
        page = client.get(f"{ADMIN}{theirs.pk}/change/")
        assert b"Object permissions" in page.content
        assert client.get(f"{ADMIN}{theirs.pk}/permissions/").status_code == 200

    def test_marketing_cannot_manage_object_permissions(self, client, marketer, two_segments):
        mine, _ = two_segments
        assign_perm("change_segment", marketer, mine)
        client.force_login(marketer)
        assert b"Object permissions" not in client.get(f"{ADMIN}{mine.pk}/change/").content
        assert client.get(f"{ADMIN}{mine.pk}/permissions/").status_code == 302  # sent back to the index

    def test_recalculation_needs_the_object_permission(self, client, marketer):
        allowed = make_segment(SPENDERS, code="allowed")
        refused = make_segment(SPENDERS, code="refused")
        for segment in (allowed, refused):
            recalculate(segment)
        assign_perm("change_segment", marketer, allowed)
        assign_perm("recalculate_segment", marketer, allowed)
        client.force_login(marketer)
        response = client.post(
            ADMIN, {"action": "recalculate_segments", "_selected_action": [allowed.pk, refused.pk]}, follow=True
        )
        assert b"1 recalculation(s) queued" in response.content and b"Not recalculated: " in response.content
        assert SegmentCalculation.objects.filter(segment=allowed, status="queued").exists()
        assert not SegmentCalculation.objects.filter(segment=refused, status="queued").exists()
        assert client.post(f"{ADMIN}{refused.pk}/recalculate/").status_code == 403
        page = client.get(f"{ADMIN}{allowed.pk}/change/")
        assert b"Recalculate now" in page.content
        assert client.post(f"{ADMIN}{allowed.pk}/recalculate/").status_code == 302


class TestRuleEditor:
    def test_live_preview_counts_and_points_at_errors(self, client, marketer):
        make_customer(metrics={"total_spent": Decimal("150")})
        make_customer(metrics={"total_spent": Decimal("50")})
        client.force_login(marketer)
        url = f"{ADMIN}preview/"
        ok = client.post(url, json.dumps({"rules": SPENDERS}), content_type="application/json")
        assert ok.status_code == 200 and ok.json()["count"] == 1 and len(ok.json()["sample"]) == 1
        bad = client.post(
            url,
            json.dumps({"rules": {"all": [SPENDERS, {"field": "tags", "op": "gt", "value": 1}]}}),
            content_type="application/json",
        )
        assert bad.status_code == 400 and "rules.all[1].op" in bad.json()["errors"]
        assert client.get(url).status_code == 405

    def test_saving_invalid_rules_shows_the_path(self, client, staff):
        client.force_login(staff(ADMINISTRATOR, "boss"))
        response = client.post(
            f"{ADMIN}add/",
            form_data(code="broken", name="Broken", kind="dynamic", rules=json.dumps({"field": "nope", "op": "eq"})),
        )
        assert response.status_code == 200
        assert "rules.field: Unknown field 'nope'." in response.context["adminform"].form.errors["rules"]
        assert not Segment.objects.filter(code="broken").exists()

    def test_saving_a_dynamic_segment_queues_its_calculation(self, client, staff):
        client.force_login(staff(ADMINISTRATOR, "boss"))
        response = client.post(
            f"{ADMIN}add/", form_data(code="spenders", name="Spenders", kind="dynamic", rules=json.dumps(SPENDERS))
        )
        assert response.status_code == 302
        segment = Segment.objects.get(code="spenders")
        assert segment.status == "calculating" and segment.calculations.get().trigger == "rules_changed"
        page = client.get(f"{ADMIN}{segment.pk}/change/")
        assert b"segment-preview" in page.content and b"Recent calculations" in page.content


class TestMembers:
    def test_member_list_and_overlap(self, client, marketer):
        people = [make_customer(metrics={"total_spent": Decimal(v)}) for v in (50, 150, 300)]
        a = make_segment(SPENDERS, code="seg_a", name="A")
        b = make_segment({"field": "total_spent", "op": "gte", "value": 200}, code="seg_b", name="B")
        recalculate(a)
        recalculate(b)
        client.force_login(marketer)
        listing = client.get("/admin/segments/segmentmembership/", {"segment__id__exact": a.pk, "current": "yes"})
        assert listing.status_code == 200
        assert {m.customer_id for m in listing.context["cl"].result_list} == {people[1].pk, people[2].pk}
        page = client.post(ADMIN, {"action": "show_overlap", "_selected_action": [a.pk, b.pk]})
        assert page.status_code == 200
        assert [cells for _, cells in page.context["table"]] == [[2, 1], [1, 1]]

    def test_csv_upload_for_static_segments(self, client, marketer):
        segment = make_segment(code="vip_list", name="VIP list")
        assign_perm("manage_segment_members", marketer, segment)
        ann = make_customer(email="ann@example.com")
        bob = make_customer(email="bob@example.com")
        cid = make_customer(email="cid@example.com")
        lines = ["email,customer_number,customer_id", "ANN@example.com,,", f",{bob.customer_number},", f",,{cid.pk}"]
        text = "\n".join([*lines, "nobody@example.com,,"]) + "\n"
        client.force_login(marketer)
        response = client.post(
            f"{ADMIN}{segment.pk}/upload/",
            {"file": SimpleUploadedFile("m.csv", text.encode(), "text/csv")},
            follow=True,
        )
        assert b"3 added" in response.content and b"1 not found" in response.content
        assert members(segment) == {ann.pk, bob.pk, cid.pk}
        assert set(SegmentMembership.objects.filter(segment=segment).values_list("source", flat=True)) == {"import"}
        replace = f"customer_id\n{ann.pk}\n"
        client.post(
            f"{ADMIN}{segment.pk}/upload/",
            {"file": SimpleUploadedFile("m.csv", replace.encode(), "text/csv"), "replace": "on"},
        )
        assert members(segment) == {ann.pk}
        other = make_segment(code="other_list")
        upload = SimpleUploadedFile("m.csv", replace.encode(), "text/csv")
        assert client.post(f"{ADMIN}{other.pk}/upload/", {"file": upload}).status_code == 403
        bad = client.post(
            f"{ADMIN}{segment.pk}/upload/", {"file": SimpleUploadedFile("m.csv", b"name\nAnn\n", "text/csv")}
        )
        assert bad.status_code == 200 and b"customer_id, customer_number or email" in bad.content

    def test_csv_export_has_only_consenting_members_when_consent_is_required(self, client, marketer):
        ann, bob = make_customer(email="ann@example.com"), make_customer(email="bob@example.com")
        grant(ann)
        grant(bob)
        from segments import services

        segment = make_segment(code="mailing", requires_consent="marketing_email")
        services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[ann.pk, bob.pk])
        from consent import services as consent_services

        consent_services.consent_change(
            actor=SYSTEM, customer_id=bob.pk, purpose_code="marketing_email", status="revoked", source="web"
        )  # no evaluation ran (no commit): bob is still a member, but must not be exported
        client.force_login(marketer)
        response = client.get(f"{ADMIN}{segment.pk}/export/")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert [row["email"] for row in rows] == ["ann@example.com"]
        assert set(rows[0]) == {
            "customer_id",
            "customer_number",
            "email",
            "first_name",
            "last_name",
            "joined_at",
            "score",
            "source",
        }

    def test_export_needs_the_permission(self, client, staff):
        segment = make_segment(code="mailing")
        client.force_login(staff(CUSTOMER_SERVICE, "rep"))
        assert client.get(f"{ADMIN}{segment.pk}/export/").status_code == 403


@pytest.mark.parametrize("group", [MARKETING, CUSTOMER_SERVICE, COMPLIANCE, ADMINISTRATOR])
def test_every_group_opens_the_segment_pages(client, staff, group):
    segment = make_segment(SPENDERS, code="spenders")
    recalculate(segment)
    client.force_login(staff(group, group.lower().replace(" ", "_")))
    for url in [
        ADMIN,
        f"{ADMIN}{segment.pk}/change/",
        f"{ADMIN}{segment.pk}/history/",
        "/admin/segments/segmentmembership/",
    ]:
        assert client.get(url).status_code == 200, url
