"""The segments API under /api/v1: definitions, calculations, members, overlap, a customer's segments and tier."""

from datetime import datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE
from customers.models import OutboxEvent
from segments import events as segment_events
from segments import services
from segments.models import Segment, SegmentCalculation, SegmentMembership
from tests.segments.conftest import SYSTEM, grant, make_customer, make_segment, members, recalculate

pytestmark = pytest.mark.django_db
URL = "/api/v1/segments"
SPENDERS = {"field": "total_spent", "op": "gte", "value": 100}


def problem(response, status_code, code):
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    return response.json()


@pytest.fixture
def reader(api_client):
    return api_client([SCOPE_READ])


@pytest.fixture
def spenders():
    customers = [make_customer(metrics={"total_spent": Decimal(amount)}) for amount in (10, 200, 300)]
    return customers


class TestDefinitions:
    def test_create_a_dynamic_segment_queues_its_calculation(self, admin_api, spenders):
        response = admin_api.post(
            URL,
            {"code": "big_spenders", "name": "Big spenders", "kind": "dynamic", "rules": SPENDERS},
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["status"] == "calculating" and body["kind"] == "dynamic" and body["created_by"] == "token:ops"
        assert response["Location"] == f"/api/v1/segments/{body['id']}"
        assert SegmentCalculation.objects.filter(segment_id=body["id"], status="queued").exists()

    def test_create_runs_the_calculation_after_commit(self, admin_api, spenders, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_api.post(
                URL, {"code": "big_spenders", "name": "Big", "kind": "dynamic", "rules": SPENDERS}, format="json"
            )
        segment = Segment.objects.get(pk=response.json()["id"])
        assert segment.status == "active" and segment.member_count == 2
        assert members(segment) == {c.pk for c in spenders[1:]}

    def test_invalid_rules_point_at_the_bad_node(self, admin_api):
        rules = {"all": [SPENDERS, {"field": "order_count", "op": "gt", "value": "lots"}]}
        body = problem(
            admin_api.post(URL, {"code": "x1", "name": "X", "kind": "dynamic", "rules": rules}, format="json"),
            400,
            "INVALID_SEGMENT_RULES",
        )
        assert body["errors"] == {"rules.all[1].value": ["Must be a whole number."]}
        assert not Segment.objects.filter(code="x1").exists()

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"code": "Bad Code", "name": "X"}, "code"),
            ({"code": "preview", "name": "X"}, "code"),
            ({"code": "ok_code", "name": "X", "kind": "static", "rules": SPENDERS}, "rules"),
            ({"code": "ok_code", "name": "X", "kind": "dynamic"}, "rules"),
            ({"code": "ok_code", "name": "X", "status": "calculating"}, "status"),
            ({"code": "ok_code", "name": "X", "colour": "red"}, "colour"),
            ({"code": "ok_code", "name": "X", "requires_consent": "nope"}, "requires_consent"),
        ],
    )
    def test_bad_definitions(self, admin_api, payload, field):
        response = admin_api.post(URL, payload, format="json")
        assert response.status_code == 400, response.content
        assert field in response.json()["errors"]

    def test_code_and_name_are_unique(self, admin_api):
        make_segment(code="vip_list", name="VIP list")
        problem(
            admin_api.post(URL, {"code": "vip_list", "name": "Other"}, format="json"), 409, "SEGMENT_ALREADY_EXISTS"
        )
        problem(
            admin_api.post(URL, {"code": "other", "name": "vip LIST"}, format="json"), 409, "SEGMENT_ALREADY_EXISTS"
        )

    def test_managing_needs_admin_scope_reading_needs_read(self, api, reader, admin_api):
        segment = make_segment(code="by_hand")
        problem(api.post(URL, {"code": "mine", "name": "Mine"}, format="json"), 403, "PERMISSION_DENIED")
        problem(api.patch(f"{URL}/{segment.pk}", {"name": "New"}, format="json"), 403, "PERMISSION_DENIED")
        problem(api.delete(f"{URL}/{segment.pk}"), 403, "PERMISSION_DENIED")
        assert reader.get(URL).status_code == 200
        assert reader.get(f"{URL}/{segment.pk}").json()["code"] == "by_hand"
        problem(reader.post(f"{URL}/preview", {"rules": SPENDERS}, format="json"), 403, "PERMISSION_DENIED")
        assert admin_api.patch(f"{URL}/{segment.pk}", {"name": "New"}, format="json").status_code == 200

    def test_a_customer_limited_token_cannot_use_segment_endpoints(self, api_client):
        customer = make_customer()
        own = api_client([SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN], customer=customer)
        problem(own.get(URL), 403, "PERMISSION_DENIED")
        assert own.get(f"/api/v1/customers/{customer.pk}/segments").status_code == 200

    def test_list_filters_and_orders(self, reader):
        make_segment(code="zz_static", name="Zed")
        make_segment(SPENDERS, code="aa_dynamic", name="Aardvark")
        codes = [item["code"] for item in reader.get(URL, {"kind": "dynamic", "ordering": "name"}).json()["results"]]
        assert codes[0] == "aa_dynamic" and "zz_static" not in codes and "churned" in codes
        assert [item["code"] for item in reader.get(URL, {"q": "zz_"}).json()["results"]] == ["zz_static"]
        assert len(reader.get(URL, {"is_builtin": "true"}).json()["results"]) == 6

    def test_unknown_and_malformed_ids(self, reader):
        problem(reader.get(f"{URL}/00000000-0000-0000-0000-000000000000"), 404, "SEGMENT_NOT_FOUND")
        assert reader.get(f"{URL}/not-a-uuid").status_code == 404

    def test_patch_rules_queues_a_recalculation(self, admin_api, spenders):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        response = admin_api.patch(
            f"{URL}/{segment.pk}", {"rules": {"field": "total_spent", "op": "gte", "value": 250}}, format="json"
        )
        assert response.status_code == 200 and response.json()["status"] == "calculating"
        recalculate(segment)
        assert members(segment) == {spenders[2].pk}
        # Newest first: the run's result, the job queued by the change, the change itself.
        done, queued, changed = segment.history.all()[:3]
        assert (changed.history_change_reason, changed.history_actor) == ("updated: rules", "token:ops")
        assert (queued.status, queued.history_actor) == ("calculating", "token:ops")
        assert queued.history_change_reason.endswith("queued")
        assert done.status == "active" and done.history_change_reason.endswith("0 joined, 1 left")

    def test_rules_cannot_change_while_calculating(self, admin_api):
        segment = make_segment(SPENDERS)  # queued
        problem(
            admin_api.patch(
                f"{URL}/{segment.pk}", {"rules": {"field": "order_count", "op": "gt", "value": 1}}, format="json"
            ),
            409,
            "SEGMENT_CALCULATING",
        )
        assert admin_api.patch(f"{URL}/{segment.pk}", {"description": "still fine"}, format="json").status_code == 200

    def test_put_replaces_and_kind_cannot_change(self, admin_api):
        segment = make_segment(code="hand", description="old")
        response = admin_api.put(f"{URL}/{segment.pk}", {"code": "hand", "name": "Hand picked"}, format="json")
        assert response.status_code == 200 and response.json()["description"] == ""
        response = admin_api.put(
            f"{URL}/{segment.pk}", {"code": "hand", "name": "H", "kind": "dynamic", "rules": SPENDERS}, format="json"
        )
        assert response.status_code == 400 and "kind" in response.json()["errors"]

    def test_delete(self, admin_api):
        segment = make_segment(code="temp")
        assert admin_api.delete(f"{URL}/{segment.pk}").status_code == 204
        assert not Segment.objects.filter(pk=segment.pk).exists()
        builtin = Segment.objects.get(code="churned")
        problem(admin_api.delete(f"{URL}/{builtin.pk}"), 409, "SEGMENT_BUILTIN")


class TestCalculation:
    def test_calculate_answers_202_with_a_job_and_does_not_start_twice(self, admin_api, reader):
        segment = Segment.objects.get(code="high_value")
        first = admin_api.post(f"{URL}/{segment.pk}/calculate")
        assert first.status_code == 202
        job = first.json()
        assert job["status"] == "queued" and job["segment_id"] == str(segment.pk)
        assert first["Location"] == f"/api/v1/segments/{segment.pk}/calculations/{job['job_id']}"
        second = admin_api.post(f"{URL}/{segment.pk}/calculate")
        assert second.status_code == 202 and second.json()["job_id"] == job["job_id"]
        assert reader.get(f"{URL}/{segment.pk}").json()["status"] == "calculating"
        polled = reader.get(f"{URL}/{segment.pk}/calculations/{job['job_id']}")
        assert polled.status_code == 200 and polled.json()["job_id"] == job["job_id"]
        other = Segment.objects.get(code="churned")
        problem(reader.get(f"{URL}/{other.pk}/calculations/{job['job_id']}"), 404, "SEGMENT_NOT_FOUND")

    def test_calculation_runs_in_the_worker(self, admin_api, spenders, django_capture_on_commit_callbacks):
        segment = Segment.objects.get(code="high_value")
        set_aov = [make_customer(metrics={"average_order_value": Decimal("250")})]
        with django_capture_on_commit_callbacks(execute=True):
            job_id = admin_api.post(f"{URL}/{segment.pk}/calculate").json()["job_id"]
        body = admin_api.get(f"{URL}/{segment.pk}/calculations/{job_id}").json()
        assert body["status"] == "succeeded" and body["joined"] == 1 and body["member_count"] == 1
        assert members(segment) == {set_aov[0].pk}

    def test_static_segments_have_nothing_to_calculate(self, admin_api):
        segment = make_segment(code="hand")
        problem(admin_api.post(f"{URL}/{segment.pk}/calculate"), 409, "SEGMENT_NOT_DYNAMIC")


class TestMembersPreviewOverlap:
    def test_members_are_paginated(self, reader, spenders):
        segment = make_segment(SPENDERS)
        recalculate(segment)
        page = reader.get(f"{URL}/{segment.pk}/customers", {"page_size": 1}).json()
        assert len(page["results"]) == 1 and page["next"]
        first = page["results"][0]
        assert set(first) == {
            "customer_id",
            "customer_number",
            "first_name",
            "last_name",
            "email",
            "joined_at",
            "score",
            "source",
        }
        second = reader.get(page["next"]).json()
        assert {first["customer_id"], second["results"][0]["customer_id"]} == {str(c.pk) for c in spenders[1:]}

    def test_members_lacking_required_consent_are_not_listed(self, reader, admin_api):
        customer, other = make_customer(), make_customer()
        grant(customer)
        segment = make_segment(code="mailing", requires_consent="marketing_email")
        response = admin_api.post(
            f"{URL}/{segment.pk}/members/bulk", {"add": [str(customer.pk), str(other.pk)]}, format="json"
        )
        assert response.json()["not_consenting"] == [str(other.pk)]
        listed = reader.get(f"{URL}/{segment.pk}/customers").json()["results"]
        assert [item["customer_id"] for item in listed] == [str(customer.pk)]

    def test_preview_saved_and_unsaved_rules(self, admin_api, spenders):
        segment = make_segment(SPENDERS)
        saved = admin_api.get(f"{URL}/{segment.pk}/preview", {"sample_size": 1}).json()
        assert saved["count"] == 2 and len(saved["sample"]) == 1
        unsaved = admin_api.post(
            f"{URL}/preview",
            {"rules": {"field": "total_spent", "op": "gte", "value": 250, "weight": 3}, "sample_size": 5},
            format="json",
        ).json()
        assert unsaved["count"] == 1
        assert unsaved["sample"][0]["customer_id"] == str(spenders[2].pk) and unsaved["sample"][0]["score"] == 3.0
        body = problem(
            admin_api.post(f"{URL}/preview", {"rules": {"field": "nope", "op": "eq"}}, format="json"),
            400,
            "INVALID_SEGMENT_RULES",
        )
        assert "rules.field" in body["errors"]
        assert not SegmentMembership.objects.filter(segment=segment).exists()

    def test_overlap(self, reader, spenders):
        a = make_segment(SPENDERS, code="seg_a")
        b = make_segment({"field": "total_spent", "op": "gte", "value": 250}, code="seg_b")
        c = make_segment({"field": "total_spent", "op": "lt", "value": 100}, code="seg_c")
        for segment in (a, b, c):
            recalculate(segment)
        body = reader.get(f"{URL}/overlap", {"ids": f"{a.pk},{b.pk},{c.pk}"}).json()
        assert [(s["code"], s["members"]) for s in body["segments"]] == [("seg_a", 2), ("seg_b", 1), ("seg_c", 1)]
        pairs = {(p["segment_a"], p["segment_b"]): p["both"] for p in body["pairs"]}
        assert pairs == {(str(a.pk), str(b.pk)): 1, (str(a.pk), str(c.pk)): 0, (str(b.pk), str(c.pk)): 0}
        problem(reader.get(f"{URL}/overlap", {"ids": str(a.pk)}), 400, "VALIDATION_ERROR")
        problem(
            reader.get(f"{URL}/overlap", {"ids": f"{a.pk},00000000-0000-0000-0000-000000000000"}),
            404,
            "SEGMENT_NOT_FOUND",
        )

    def test_bulk_members_of_a_static_segment(self, admin_api):
        segment = make_segment(code="hand")
        people = [make_customer() for _ in range(3)]
        response = admin_api.post(
            f"{URL}/{segment.pk}/members/bulk",
            {"add": [str(p.pk) for p in people] + ["00000000-0000-0000-0000-000000000000"]},
            format="json",
        )
        body = response.json()
        assert response.status_code == 200
        assert set(body["added"]) == {str(p.pk) for p in people} and body["member_count"] == 3
        assert body["not_found"] == ["00000000-0000-0000-0000-000000000000"]
        again = admin_api.post(
            f"{URL}/{segment.pk}/members/bulk",
            {"add": [str(people[0].pk)], "remove": [str(people[1].pk), str(people[1].pk)]},
            format="json",
        ).json()
        assert again["already_members"] == [str(people[0].pk)] and again["removed"] == [str(people[1].pk)]
        assert again["member_count"] == 2
        problem(admin_api.post(f"{URL}/{segment.pk}/members/bulk", {}, format="json"), 400, "VALIDATION_ERROR")
        dynamic = Segment.objects.get(code="churned")
        problem(
            admin_api.post(f"{URL}/{dynamic.pk}/members/bulk", {"add": [str(people[0].pk)]}, format="json"),
            409,
            "SEGMENT_NOT_STATIC",
        )

    def test_fields_catalogue(self, reader):
        fields = {item["field"]: item for item in reader.get(f"{URL}/fields").json()}
        assert {"age", "country", "consent", "segments", "orders_last_<days>_days", "custom_attributes.<key>"} <= set(
            fields
        )
        assert "within_last_days" in fields["last_order_at"]["operators"]


class TestCustomerSegments:
    def test_list_assign_and_remove(self, api_client, admin_api):
        customer = make_customer()
        static = make_segment(code="beta_testers")
        url = f"/api/v1/customers/{customer.pk}/segments"
        created = admin_api.post(url, {"code": "beta_testers"}, format="json")
        assert created.status_code == 201
        assert created.json()["code"] == "beta_testers" and created.json()["source"] == "manual"
        assert admin_api.post(url, {"segment_id": str(static.pk)}, format="json").status_code == 200
        own = api_client([SCOPE_READ], customer=customer)
        listed = own.get(url).json()
        assert [item["code"] for item in listed] == ["beta_testers"]
        assert admin_api.delete(f"{url}/{static.pk}").status_code == 204
        assert own.get(url).json() == []
        problem(admin_api.delete(f"{url}/{static.pk}"), 404, "SEGMENT_MEMBERSHIP_NOT_FOUND")

    def test_errors(self, api, admin_api, api_client):
        customer, other = make_customer(), make_customer()
        url = f"/api/v1/customers/{customer.pk}/segments"
        problem(api.post(url, {"code": "churned"}, format="json"), 403, "PERMISSION_DENIED")
        problem(admin_api.post(url, {"code": "churned"}, format="json"), 409, "SEGMENT_NOT_STATIC")
        problem(admin_api.post(url, {"code": "nope"}, format="json"), 404, "SEGMENT_NOT_FOUND")
        problem(admin_api.post(url, {}, format="json"), 400, "VALIDATION_ERROR")
        make_segment(code="mailing", requires_consent="marketing_email")
        problem(admin_api.post(url, {"code": "mailing"}, format="json"), 409, "CONSENT_REQUIRED")
        bola = api_client([SCOPE_READ], customer=other)
        problem(bola.get(url), 404, "CUSTOMER_NOT_FOUND")
        problem(bola.get(f"/api/v1/customers/{customer.pk}/tier"), 404, "CUSTOMER_NOT_FOUND")

    def test_scores_are_shown(self, api):
        customer = make_customer(metrics={"total_spent": Decimal("500")})
        segment = make_segment({"field": "total_spent", "op": "gte", "value": 100, "weight": 2.5})
        recalculate(segment)
        [item] = [i for i in api.get(f"/api/v1/customers/{customer.pk}/segments").json() if i["code"] == segment.code]
        assert item["score"] == 2.5 and item["source"] == "rule" and item["kind"] == "dynamic"

    def test_leaving_and_rejoining_a_static_segment_keeps_the_closed_membership(self, admin_api):
        customer = make_customer()
        static = make_segment(code="beta_testers")
        url = f"/api/v1/customers/{customer.pk}/segments"
        assert admin_api.post(url, {"segment_id": str(static.pk)}, format="json").status_code == 201
        assert admin_api.delete(f"{url}/{static.pk}").status_code == 204
        assert admin_api.post(url, {"segment_id": str(static.pk)}, format="json").status_code == 201
        first, second = SegmentMembership.objects.filter(segment=static, customer=customer).order_by("joined_at", "id")
        assert first.left_at is not None and second.left_at is None
        assert second.joined_at > first.left_at
        assert second.pk != first.pk and (first.source, second.source) == ("manual", "manual")
        assert members(static) == {customer.pk}
        events = [
            event
            for event in OutboxEvent.objects.filter(subject=str(customer.pk)).order_by("occurred_at", "sequence")
            if event.event_type.startswith("customer.segment.") and event.data.get("segment_id") == str(static.pk)
        ]
        assert [event.event_type for event in events] == [
            segment_events.SEGMENT_ASSIGNED,
            segment_events.SEGMENT_REMOVED,
            segment_events.SEGMENT_ASSIGNED,
        ]
        assert events[1].data["reason"] == segment_events.LEFT_MANUAL
        stamps = [events[0].data["joined_at"], events[1].data["left_at"], events[2].data["joined_at"]]
        assert [datetime.fromisoformat(stamp) for stamp in stamps] == [first.joined_at, first.left_at, second.joined_at]


@pytest.fixture
def world():
    """A calculated dynamic segment and a static one, each with the same member; a customer in neither."""
    member, outsider = make_customer(metrics={"total_spent": Decimal("500")}), make_customer()
    dynamic = make_segment(SPENDERS, code="spenders")
    recalculate(dynamic)
    static = make_segment(code="hand")
    services.segment_members_add(actor=SYSTEM, segment_id=static.pk, customer_ids=[member.pk])
    assert members(dynamic) == members(static) == {member.pk}
    return {"member": member, "outsider": outsider, "dynamic": dynamic, "static": static}


def everything(world) -> tuple:
    """What a request that changed something would have changed: segments, memberships, jobs, events."""
    return (
        list(Segment.objects.order_by("pk").values()),
        list(SegmentMembership.objects.order_by("pk").values()),
        list(SegmentCalculation.objects.order_by("pk").values()),
        OutboxEvent.objects.count(),
        world["dynamic"].history.count(),
        world["static"].history.count(),
    )


# (method, path, body, the status an admin token gets, whether that changes anything)
NEEDS_ADMIN = {
    "replace": (
        "put",
        "/api/v1/segments/{dynamic}",
        {"code": "spenders", "name": "Renamed", "rules": {"field": "total_spent", "op": "gte", "value": 250}},
        200,
        True,
    ),
    "calculate": ("post", "/api/v1/segments/{dynamic}/calculate", None, 202, True),
    "preview": ("get", "/api/v1/segments/{dynamic}/preview", None, 200, False),
    "members_bulk": (
        "post",
        "/api/v1/segments/{static}/members/bulk",
        {"add": ["{outsider}"], "remove": ["{member}"]},
        200,
        True,
    ),
    "remove_member": ("delete", "/api/v1/customers/{member}/segments/{static}", None, 204, True),
}
NEEDS_READ = {
    "segment_members": "/api/v1/segments/{dynamic}/customers",
    "customer_segments": "/api/v1/customers/{member}/segments",
    "customer_tier": "/api/v1/customers/{member}/tier",
    "overlap": "/api/v1/segments/overlap?ids={dynamic},{static}",
}


def _ids(world) -> dict:
    return {name: str(value.pk) for name, value in world.items()}


def _send(client, method, path, body, world):
    """The request, with the world's ids filled into the path and into the body's id lists."""
    ids = _ids(world)
    send = getattr(client, method)
    if body is None:
        return send(path.format(**ids))
    filled = {
        key: [item.format(**ids) for item in value] if isinstance(value, list) else value for key, value in body.items()
    }
    return send(path.format(**ids), filled, format="json")


class TestScopes:
    @pytest.mark.parametrize("endpoint", NEEDS_ADMIN)
    def test_managing_without_the_admin_scope_is_denied_and_changes_nothing(
        self, endpoint, api, admin_api, world, django_capture_on_commit_callbacks
    ):
        method, path, body, allowed, changes = NEEDS_ADMIN[endpoint]
        before = everything(world)
        with django_capture_on_commit_callbacks() as queued:
            problem(_send(api, method, path, body, world), 403, "PERMISSION_DENIED")
        assert queued == []  # no calculation (or anything else) waits for the commit
        assert everything(world) == before
        assert members(world["static"]) == members(world["dynamic"]) == {world["member"].pk}
        # The same request with customers:admin goes through: the denial was the scope, not the request.
        response = _send(admin_api, method, path, body, world)
        assert response.status_code == allowed, response.content
        assert (everything(world) != before) is changes

    @pytest.mark.parametrize("scopes", [[SCOPE_WRITE], [SCOPE_WRITE, SCOPE_ADMIN]], ids=["write", "write_admin"])
    @pytest.mark.parametrize("endpoint", NEEDS_READ)
    def test_reading_memberships_needs_the_read_scope(self, endpoint, scopes, api_client, reader, world):
        path = NEEDS_READ[endpoint].format(**_ids(world))
        body = problem(api_client(scopes).get(path), 403, "PERMISSION_DENIED")
        assert SCOPE_READ in body["detail"]
        assert reader.get(path).status_code == 200

    def test_a_member_of_a_dynamic_segment_cannot_be_removed_by_hand(self, admin_api, world):
        member, dynamic = world["member"], world["dynamic"]
        [row] = SegmentMembership.objects.filter(segment=dynamic, customer=member)
        removed_before = OutboxEvent.objects.filter(event_type=segment_events.SEGMENT_REMOVED).count()
        problem(admin_api.delete(f"/api/v1/customers/{member.pk}/segments/{dynamic.pk}"), 409, "SEGMENT_NOT_STATIC")
        assert list(SegmentMembership.objects.filter(segment=dynamic, customer=member)) == [row]
        row.refresh_from_db()
        assert row.left_at is None
        assert OutboxEvent.objects.filter(event_type=segment_events.SEGMENT_REMOVED).count() == removed_before
        dynamic.refresh_from_db()
        assert dynamic.member_count == 1


def test_schema_documents_the_segment_endpoints(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out))
    text = out.read_text()
    for path in [
        "/api/v1/segments:",
        "/api/v1/segments/{id}:",
        "/api/v1/segments/{id}/calculate:",
        "/api/v1/segments/{id}/customers:",
        "/api/v1/segments/{id}/preview:",
        "/api/v1/segments/preview:",
        "/api/v1/segments/overlap:",
        "/api/v1/segments/{id}/members/bulk:",
        "/api/v1/customers/{customer_id}/segments:",
        "/api/v1/customers/{customer_id}/segments/{segment_id}:",
        "/api/v1/customers/{customer_id}/tier:",
    ]:
        assert path in text, path
    assert "INVALID_SEGMENT_RULES" in text and "SEGMENT_NOT_STATIC" in text


def test_system_actor_is_recorded_on_builtins():
    assert Segment.objects.get(code="churned").created_by == "system:migration"
    assert SYSTEM.label == "system:tests"
