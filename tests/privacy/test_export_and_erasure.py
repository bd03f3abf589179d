"""Export and erasure against everything we hold: the proof is a scan of every table and Redis key."""

import json
from datetime import date
from pathlib import Path

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection
from django.utils import timezone
from django_redis import get_redis_connection

from addresses import services as address_services
from customers import activity, bulk_export, notes
from customers import services as customer_services
from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from customers.messaging.schemas import validation_errors
from customers.models import (
    Customer,
    CustomerActivity,
    CustomerExportJob,
    CustomerNote,
    CustomerOrder,
    DeadLetter,
    DuplicateCandidate,
    OutboxEvent,
)
from privacy import exports, services
from privacy.models import DataSubjectRequest, ErasureLog
from privacy.portability import privacy_import_portable
from segments import services as segment_services
from segments.models import SegmentMembership
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def rich_customer(api_client, staff_user, prefix: str, phone: str, line: str) -> tuple[Customer, dict]:
    """A customer with data in every app and every kind of table: rows, history, events, logs, cache."""
    values = {
        "email": f"{prefix}.quixotewright@example.org",
        "first_name": f"{prefix.capitalize()}ebulon",
        "last_name": f"{prefix.capitalize()}uixotewright",
        "phone": phone,
        "date_of_birth": "1987-06-05" if prefix == "ann" else "1979-11-23",
        "company_name": f"{prefix.capitalize()}ebulon Widgets GmbH",
        "external_id": f"LEGACY-{prefix.upper()}-4711",
        "line1": f"{line} Marmalade Lane 17",
        "line2": f"Hinterhaus {prefix.upper()}",
        "note": f"Called about {prefix} parcel, very polite",
        "note_text": f"Prefers {prefix} deliveries after six, dog named Sprocketwhistle{prefix}",
        "nickname": f"{prefix}-bubbles",
    }
    own = api_client([SCOPE_READ, SCOPE_WRITE], subject=f"storefront-{prefix}")
    response = own.post(
        "/api/v1/customers",
        {
            "email": values["email"],
            "first_name": values["first_name"],
            "last_name": "Temp",
            "phone": values["phone"],
            "date_of_birth": values["date_of_birth"],
            "customer_type": "business",
            "company_name": values["company_name"],
            "external_id": values["external_id"],
            "custom_attributes": {"nickname": values["nickname"]},
            "preferences": {"custom": {"favourite": values["nickname"]}, "communication": {"email": True}},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    customer = Customer.objects.get(pk=response.json()["id"])
    own.patch(f"/api/v1/customers/{customer.pk}", {"last_name": values["last_name"]}, format="json")
    own.post(f"/api/v1/customers/{customer.pk}/status", {"status": "inactive", "reason": values["note"]}, format="json")
    own.post(f"/api/v1/customers/{customer.pk}/status", {"status": "active", "reason": "back"}, format="json")

    staff = Actor.for_staff(staff_user)
    home = address_services.address_create(
        actor=staff,
        customer_id=customer.pk,
        type="both",
        label="Home",
        first_name=values["first_name"],
        last_name=values["last_name"],
        line1=values["line1"],
        line2=values["line2"],
        city="Berlin",
        postal_code="10115",
        country="DE",
        phone=values["phone"],
    )
    old = address_services.address_create(
        actor=staff,
        customer_id=customer.pk,
        type="shipping",
        label="Old",
        line1=f"{values['line1']} (old)",
        first_name=values["first_name"],
        last_name=values["last_name"],
        city="Berlin",
        postal_code="10117",
        country="DE",
    )
    address_services.address_update(
        actor=staff, customer_id=customer.pk, address_id=home.pk, changes={"label": "Home!"}
    )
    address_services.address_delete(actor=staff, customer_id=customer.pk, address_id=old.pk)

    response = own.put(
        f"/api/v1/customers/{customer.pk}/consents/analytics",
        {"status": "granted", "source": "web"},
        format="json",
        HTTP_USER_AGENT=f"Mozilla/5.0 ({prefix}-unique-agent)",
        REMOTE_ADDR="203.0.113.77",
    )
    assert response.status_code == 200, response.content

    segment = segment_services.segment_create(actor=SYSTEM, code=f"vip_{prefix}", name=f"VIP {prefix}")
    segment_services.customer_segment_assign(actor=SYSTEM, customer_id=customer.pk, segment_id=segment.pk)
    activity.activity_track(
        actor=SYSTEM,
        customer_id=customer.pk,
        activity_type="page_view",
        summary=f"viewed {values['nickname']} wishlist",
        data={"search": values["nickname"]},
    )
    CustomerOrder.objects.create(
        order_id=f"O-{prefix}",
        customer=customer,
        total=10,
        currency="EUR",
        status="completed",
        placed_at=timezone.now(),
        status_changed_at=timezone.now(),
    )
    LogEntry.objects.log_actions(  # its object_repr is str(customer): the names
        user_id=staff_user.pk,
        queryset=[customer],
        action_flag=CHANGE,
        change_message=f"Changed last_name for {values['last_name']}",
        single_object=True,
    )
    # A real staff note (with its history row), and a dead letter whose raw body names the person.
    notes.note_create(actor=staff, customer_id=customer.pk, text=values["note_text"])
    DeadLetter.objects.create(
        event_id=f"dl-{prefix}",
        event_type="order.created.v1",
        reason="INVALID_PAYLOAD",
        body=json.dumps({"data": {"customer_email": values["email"], "ship_to": values["line1"]}}),
    )
    return customer, values


def text_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'public'
                 AND (data_type IN ('text', 'character varying', 'jsonb', 'json', 'inet')
                      OR (data_type = 'ARRAY'))"""
        )
        return cursor.fetchall()


def find_in_database(value: str) -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for table, column in text_columns():
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s', [f"%{value}%"])
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


def find_in_redis(value: str) -> list[str]:
    redis = get_redis_connection("default")
    needle = value.encode()
    found = []
    for key in redis.scan_iter("*"):
        kind = redis.type(key)
        if kind == b"string":
            blobs = [redis.get(key) or b""]
        elif kind == b"hash":
            blobs = list(redis.hgetall(key).values())
        elif kind == b"list":
            blobs = redis.lrange(key, 0, -1)
        elif kind in (b"set",):
            blobs = list(redis.smembers(key))
        elif kind == b"zset":
            blobs = [member for member, _ in redis.zrange(key, 0, -1, withscores=True)]
        else:
            blobs = []
        if needle in key or any(needle in blob for blob in blobs):
            found.append(key.decode(errors="replace"))
    return found


def find_in_files(directory: Path, value: str) -> list[str]:
    return [str(path) for path in directory.rglob("*") if path.is_file() and value.encode() in path.read_bytes()]


@pytest.fixture
def compliance_officer(django_user_model):
    return django_user_model.objects.create_user("officer", is_staff=True)


def test_erasure_leaves_nothing_behind_and_keeps_the_others(
    api_client, compliance_officer, django_capture_on_commit_callbacks, settings, tmp_path, django_user_model
):
    settings.PRIVACY_EXPORT_DIR = str(tmp_path / "exports")
    with django_capture_on_commit_callbacks(execute=True):
        ann, ann_values = rich_customer(api_client, compliance_officer, "ann", "+14155550199", "Quokka")
        bob, bob_values = rich_customer(api_client, compliance_officer, "bob", "+442079460999", "Wombat")
        export_request, _ = services.privacy_request_file(
            actor=SYSTEM, customer_id=ann.pk, kind="access", notes=f"asked by phone, {ann_values['first_name']}"
        )
    # An older record of Ann's, merged into her: it keeps its own names and phone.
    ann_old = CustomerFactory(
        email="ann.old.quixotewright@example.org",
        first_name="Annabellequix",
        last_name="Oldquixotewright",
        phone="+14155550177",
    )
    with django_capture_on_commit_callbacks(execute=True):
        customer_services.customer_merge(actor=SYSTEM, survivor_id=ann.pk, merged_id=ann_old.pk)
    merged_values = {
        "old_first_name": "Annabellequix",
        "old_last_name": "Oldquixotewright",
        "old_phone": "+14155550177",
    }
    for value in merged_values.values():
        assert find_in_database(value), value
    ann_values.update(merged_values)
    settings.CUSTOMER_EXPORT_DIR = str(tmp_path / "staff-exports")
    staff_exports = tmp_path / "staff-exports"
    first, second = sorted([ann, bob], key=lambda c: str(c.pk))
    DuplicateCandidate.objects.create(customer=first, other=second, reasons=["name"])
    exporter = django_user_model.objects.create_superuser("exporter", password="x")
    with django_capture_on_commit_callbacks(execute=True):  # staff CSV exports: one names Ann, one only Bob
        ann_job = bulk_export.export_job_create(
            user=exporter, queryset=Customer.objects.filter(email__icontains=ann_values["email"]), fmt="csv"
        )
        bob_job = bulk_export.export_job_create(
            user=exporter, queryset=Customer.objects.filter(email__icontains=bob_values["email"]), fmt="csv"
        )
        # Holds Ann without naming her: only its access log says whom the file holds.
        both_job = bulk_export.export_job_create(
            user=exporter, queryset=Customer.objects.filter(pk__in=[ann.pk, bob.pk]), fmt="csv"
        )
    assert CustomerExportJob.objects.get(pk=ann_job.pk).status == "done"
    assert CustomerExportJob.objects.get(pk=both_job.pk).status == "done"
    assert find_in_files(staff_exports, ann_values["email"]) and find_in_files(staff_exports, bob_values["email"])
    assert CustomerNote.objects.filter(customer=ann).exists() and DeadLetter.objects.filter(event_id="dl-ann")
    assert CustomerActivity.objects.filter(customer=ann).exists()
    reader = api_client([SCOPE_READ])
    for customer in (ann, bob):
        assert reader.get(f"/api/v1/customers/{customer.pk}").status_code == 200  # now cached in Redis
    export_request.refresh_from_db()
    export_file = Path(export_request.result_file)
    assert export_request.status == "completed" and export_file.exists()
    # Everything is really there before the erasure (so the scan below can fail).
    for value in ann_values.values():
        assert find_in_database(value) or value == ann_values["date_of_birth"], value
    assert find_in_redis(ann_values["email"])

    admin = Actor.for_staff(compliance_officer)
    with django_capture_on_commit_callbacks(execute=True):
        erasure, _ = services.privacy_request_file(actor=admin, customer_id=ann.pk, kind="erasure")
        services.privacy_approve_erasure(actor=admin, request_id=erasure.pk)
    erasure.refresh_from_db()
    assert erasure.status == "completed", erasure.status_reason

    leaks = {
        value: find_in_database(value) + find_in_redis(value) + find_in_files(tmp_path, value)
        for value in ann_values.values()
    }
    assert {value: where for value, where in leaks.items() if where} == {}
    assert not export_file.exists()
    # Deleted, not blanked: activity, notes, the dead letter, the duplicate pair, Ann's staff export.
    assert not CustomerActivity.objects.filter(customer=ann).exists()
    assert not CustomerNote.objects.filter(customer=ann).exists()
    assert not DeadLetter.objects.filter(event_id="dl-ann").exists() and DeadLetter.objects.filter(event_id="dl-bob")
    assert not DuplicateCandidate.objects.exists()
    assert not CustomerExportJob.objects.filter(pk__in=[ann_job.pk, both_job.pk]).exists()
    assert CustomerExportJob.objects.filter(pk=bob_job.pk).exists()
    assert find_in_files(staff_exports, bob_values["email"])
    # The outbox keeps Ann's events, each still valid against its schema (personal fields stripped only).
    ann_events = list(OutboxEvent.objects.filter(subject=str(ann.pk)))
    assert ann_events
    assert {event.event_type: validation_errors(event.event_type, event.data) for event in ann_events} == {
        event.event_type: [] for event in ann_events
    }
    created = OutboxEvent.objects.get(subject=str(ann.pk), event_type="customer.created.v1")
    assert created.data["customer_id"] == str(ann.pk) and "email" not in created.data

    ann.refresh_from_db()
    assert ann.status == "erased" and ann.email.endswith("@erased.invalid") and ann.date_of_birth is None
    assert not SegmentMembership.objects.filter(customer=ann).exists()
    # What the law needs stays: the consent proof (pseudonymous) and the erasure log.
    assert ann.consent_records.exists()
    log = ErasureLog.objects.get(request=erasure)
    assert log.customer_id == ann.pk and log.counts["addresses_address"] == 2
    assert not any(value in json.dumps(log.counts) for value in ann_values.values())
    erased_event = OutboxEvent.objects.get(event_type="customer.erased.v1", subject=str(ann.pk))
    assert erased_event.data == {"customer_id": str(ann.pk)}

    # The other customer is untouched.
    for value in bob_values.values():
        if value != bob_values["date_of_birth"]:
            assert find_in_database(value), value
    bob.refresh_from_db()
    assert bob.status == "active" and bob.email == bob_values["email"]

    # A second run changes nothing.
    events_before = OutboxEvent.objects.count()
    services.privacy_run_erasure(actor=admin, request_id=erasure.pk)
    assert ErasureLog.objects.count() == 1 and OutboxEvent.objects.count() == events_before


def test_erasure_waits_while_orders_are_open(api_client):
    customer = CustomerFactory(email="a@example.com")
    CustomerOrder.objects.create(
        order_id="O-1",
        customer=customer,
        total=5,
        currency="EUR",
        status="open",
        placed_at=timezone.now(),
        status_changed_at=timezone.now(),
    )
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="erasure")
    services.privacy_request_transition(actor=SYSTEM, request_id=request.pk, to="in_progress")
    services.privacy_run_erasure(actor=SYSTEM, request_id=request.pk)
    request.refresh_from_db()
    customer.refresh_from_db()
    assert request.status == "on_hold" and "open orders" in request.status_reason
    assert customer.status == "active" and customer.email == "a@example.com"


def test_export_validates_is_served_to_the_customer_and_round_trips(
    api_client, compliance_officer, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.PRIVACY_EXPORT_DIR = str(tmp_path / "exports")
    with django_capture_on_commit_callbacks(execute=True):
        ann, values = rich_customer(api_client, compliance_officer, "ann", "+14155550199", "Quokka")
    own = api_client([SCOPE_READ, SCOPE_WRITE], customer=ann)
    with django_capture_on_commit_callbacks(execute=True):
        response = own.post(f"/api/v1/customers/{ann.pk}/privacy-requests", {"kind": "portability"}, format="json")
    assert response.status_code == 202
    document = own.get(f"/api/v1/customers/{ann.pk}/data").json()
    exports.validate_document(document)
    data = document["data"]
    assert data["customers"]["profile"]["email"] == values["email"]
    assert len(data["addresses"]["addresses"]) == 2  # the soft-deleted one too
    assert {row["purpose_code"] for row in data["consent"]["record"]} >= {"analytics", "marketing_email"}
    assert "vip_ann" in {row["segment_code"] for row in data["segments"]["memberships"]}
    assert data["customers"]["activity"] and data["customers"]["events"] and data["customers"]["profile_history"]
    assert document["processing"]["recipients"] and document["processing"]["retention"]
    assert Path(DataSubjectRequest.objects.get(kind="portability").result_file).stat().st_mode & 0o077 == 0

    # Erase the original, then bring the person back from their portable export.
    admin = Actor.for_staff(compliance_officer)
    with django_capture_on_commit_callbacks(execute=True):
        erasure, _ = services.privacy_request_file(actor=admin, customer_id=ann.pk, kind="erasure")
        services.privacy_approve_erasure(actor=admin, request_id=erasure.pk)
    with django_capture_on_commit_callbacks(execute=True):
        restored = privacy_import_portable(actor=admin, document=document)
    assert restored.pk != ann.pk
    restored.refresh_from_db()
    assert (restored.email, restored.first_name, restored.last_name, restored.phone, restored.date_of_birth) == (
        values["email"],
        values["first_name"],
        values["last_name"],
        values["phone"],
        date(1987, 6, 5),
    )
    assert restored.custom_attributes == {"nickname": values["nickname"]}
    assert restored.preferences.email_opt_in and restored.preferences.custom == {"favourite": values["nickname"]}
    assert [a.line1 for a in restored.addresses.all()] == [values["line1"]]
    granted = set(restored.consent_states.filter(status="granted").values_list("purpose__code", flat=True))
    assert granted == {"analytics", "marketing_email"}


def test_restricted_customer_leaves_segments_and_events_carry_ids_only(api_client):
    customer = CustomerFactory(email="r@example.com", first_name="Rita")
    segment = segment_services.segment_create(
        actor=SYSTEM,
        code="everyone",
        name="Everyone",
        kind="dynamic",
        rules={"all": [{"field": "status", "op": "eq", "value": "active"}]},
    )
    segment_services.segments_recalculate_all(actor=SYSTEM)
    assert SegmentMembership.objects.filter(customer=customer, segment=segment, left_at__isnull=True).exists()
    services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="restriction")
    segment_services.segments_recalculate_all(actor=SYSTEM)
    assert not SegmentMembership.objects.filter(customer=customer, segment=segment, left_at__isnull=True).exists()
    customer_services.customer_update(actor=SYSTEM, customer_id=customer.pk, changes={"first_name": "Rina"})
    event = OutboxEvent.objects.filter(subject=str(customer.pk), event_type="customer.updated.v1").latest("occurred_at")
    assert set(event.data) == {"customer_id"}


def test_admin_and_api_scopes_for_privacy(api_client):
    customer = CustomerFactory(email="a@example.com")
    assert (
        api_client([SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN])
        .post(f"/api/v1/customers/{customer.pk}/privacy-requests", {"kind": "erasure"}, format="json")
        .status_code
        == 202
    )
