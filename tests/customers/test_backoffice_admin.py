"""The back-office screens: search, merge and undo, duplicates, notes list, access log, import, exports, bulk work."""

import csv
import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from customers import bulk_export, services
from customers.actor import Actor
from customers.models import (
    AccessLog,
    Customer,
    CustomerExportJob,
    CustomerMerge,
    CustomerNote,
    DuplicateCandidate,
    OutboxEvent,
)
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE
from segments import services as segment_services
from segments.models import SegmentMembership
from tests.addresses.conftest import migrated_data_restored  # noqa: F401  (module fixture)
from tests.addresses.factories import make_address
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
CHANGELIST = "/admin/customers/customer/"


@pytest.fixture(autouse=True)
def _export_dir(settings, tmp_path):
    settings.CUSTOMER_EXPORT_DIR = str(tmp_path / "exports")


def found(client, term):
    response = client.get(CHANGELIST, {"q": term})
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


# ---------------------------------------------------------------- finding customers


def test_search_by_any_identifier_exact_match_first(client, staff):
    ann = CustomerFactory(
        email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155552671", external_id="crm-77"
    )
    leeann = CustomerFactory(email="leeann@example.com", first_name="Leeann", last_name="Annlee")
    bob = CustomerFactory(email="bob@example.com", first_name="Bob", last_name="Stone", phone="+442079460123")
    make_address(bob, country="DE", postal_code="10117")
    client.force_login(staff(CUSTOMER_SERVICE))
    assert found(client, "+1 415-555-2671") == [ann]
    assert found(client, "4155552671") == [ann]
    assert found(client, "555-2671") == [ann]
    assert found(client, "crm-77") == [ann]
    assert found(client, "10117") == [bob]
    assert found(client, bob.customer_number) == [bob]
    # "lee" matches both; the exact last name first, whatever the creation order
    assert found(client, "lee") == [ann, leeann]
    assert found(client, "ann lee") == [ann, leeann]
    assert found(client, "ann.lee@example.com") == [ann]
    # a clicked column still sorts
    response = client.get(CHANGELIST, {"q": "lee", "o": "-1"})  # customer number, descending
    assert list(response.context["cl"].result_list) == [leeann, ann]


def test_phone_search_in_national_format_with_a_trunk_prefix(client, staff, settings):
    from customers import selectors

    bob = CustomerFactory(email="bob@example.com", first_name="Bob", phone="+442079460123")
    ann = CustomerFactory(email="ann@example.com", first_name="Ann", phone="+14155552671")
    client.force_login(staff(CUSTOMER_SERVICE))
    for written in ("020 7946 0123", "(020) 7946-0123", "02079460123", "0044 20 7946 0123", "+44 20 7946 0123"):
        assert found(client, written) == [bob], written
    assert found(client, "7946 0123") == [bob]
    assert found(client, "(415) 555-2671") == [ann] and found(client, "555-2671") == [ann]
    runs, numbers = selectors._phone_forms("020 7946 0123")
    assert "2079460123" in runs and "+442079460123" in numbers
    settings.CUSTOMER_PHONE_SEARCH_REGIONS = ["US"]  # read in the US only, the national form still matches
    assert "+442079460123" not in selectors._phone_forms("020 7946 0123")[1]
    assert found(client, "020 7946 0123") == [bob]
    ranked = selectors.customer_search(Customer.objects.all(), "020 7946 0123").get()
    assert ranked.search_rank == 3  # without its region it is a partial match, not an exact one
    settings.CUSTOMER_PHONE_SEARCH_REGIONS = ["GB"]
    assert selectors.customer_search(Customer.objects.all(), "020 7946 0123").get().search_rank == 0


# ---------------------------------------------------------------- duplicates and merge


def test_a_rep_reviews_a_duplicate_merges_field_by_field_and_undoes(client, staff):
    rep = staff(CUSTOMER_SERVICE, "rep1")
    older = CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee", phone="+14155552671")
    newer = CustomerFactory(email="ann.lee@gmail.com", first_name="Anne", last_name="Lee", phone="+14155552671")
    services.note_create(actor=Actor.for_staff(rep), customer_id=newer.pk, text="Moved to Berlin")
    client.force_login(rep)
    listing = client.get("/admin/customers/duplicatecandidate/")
    assert listing.status_code == 200 and b"Compare and merge" in listing.content
    candidate = DuplicateCandidate.objects.get()
    url = f"{reverse('admin:customers_customer_merge')}?a={candidate.customer_id}&b={candidate.other_id}"
    page = client.get(url)
    assert page.status_code == 200
    differing = {row["name"] for row in page.context["rows"]}
    assert {"email", "first_name"} <= differing and "phone" not in differing and "last_name" not in differing
    a_is_older = str(candidate.customer_id) == str(older.pk)
    keep = "a" if a_is_older else "b"
    take = "b" if a_is_older else "a"
    response = client.post(url, {"survivor": keep, "field_email": take, "reason": "Same person"})
    assert response.status_code == 302 and response["Location"].endswith(f"{older.pk}/change/")
    older.refresh_from_db()
    newer.refresh_from_db()
    assert older.email == "ann.lee@gmail.com" and older.first_name == "Ann"
    assert newer.status == "merged" and newer.merged_into_id == older.pk
    assert CustomerNote.objects.get().customer_id == older.pk
    merge = CustomerMerge.objects.get()
    assert merge.merged_by == "staff:rep1" and merge.reason == "Same person"

    merge_page = client.get(reverse("admin:customers_customermerge_change", args=[merge.pk]))
    assert merge_page.status_code == 200 and merge_page.context["can_undo"]
    undone = client.post(reverse("admin:customers_customermerge_undo", args=[merge.pk]), {"reason": "Wrong person"})
    assert undone.status_code == 302
    newer.refresh_from_db()
    assert newer.status == "active" and newer.email == "ann.lee@gmail.com"
    assert CustomerNote.objects.get().customer_id == newer.pk


def test_dismissing_a_candidate_and_who_may_merge(client, staff):
    CustomerFactory(phone="+14155552671")
    CustomerFactory(phone="+14155552671")
    candidate = DuplicateCandidate.objects.get()
    client.force_login(staff(COMPLIANCE))  # sees the list, may neither merge nor dismiss
    assert client.get("/admin/customers/duplicatecandidate/").status_code == 200
    url = f"{reverse('admin:customers_customer_merge')}?a={candidate.customer_id}&b={candidate.other_id}"
    assert client.get(url).status_code == 403
    client.post(
        "/admin/customers/duplicatecandidate/", {"action": "dismiss", "_selected_action": [candidate.pk]}
    )
    candidate.refresh_from_db()
    assert candidate.status == "open"
    client.force_login(staff(CUSTOMER_SERVICE))
    client.post("/admin/customers/duplicatecandidate/", {"action": "dismiss", "_selected_action": [candidate.pk]})
    candidate.refresh_from_db()
    assert candidate.status == "dismissed"


# ---------------------------------------------------------------- notes list


def test_notes_list_full_text_search_and_filters(client, staff):
    rep = staff(CUSTOMER_SERVICE, "rep1")
    compliance = staff(COMPLIANCE, "officer")
    ann, bob = CustomerFactory(), CustomerFactory()
    refund = services.note_create(
        actor=Actor.for_staff(rep), customer_id=ann.pk, text="Asked about refunds", kind="support"
    )
    services.note_create(actor=Actor.for_staff(rep), customer_id=bob.pk, text="Wants the catalogue", kind="sales")
    secret = services.note_create(
        actor=Actor.for_staff(compliance), customer_id=bob.pk, text="Refund fraud suspected", kind="compliance"
    )
    client.force_login(rep)
    listing = client.get("/admin/customers/customernote/", {"q": "refund"})
    assert list(listing.context["cl"].result_list) == [refund]  # the compliance note is not even found
    assert list(client.get("/admin/customers/customernote/", {"kind__exact": "sales"}).context["cl"].result_list)
    assert client.get(f"/admin/customers/customernote/{secret.pk}/change/").status_code == 302  # not visible
    by_author = client.get("/admin/customers/customernote/", {"author__id__exact": rep.pk})
    assert len(by_author.context["cl"].result_list) == 2
    client.force_login(compliance)
    listing = client.get("/admin/customers/customernote/", {"q": "refund"})
    assert set(listing.context["cl"].result_list) == {refund, secret}


# ---------------------------------------------------------------- the access log


def test_access_log_is_for_administrators_and_filterable(client, staff):
    rep = staff(CUSTOMER_SERVICE, "rep1")
    ann, bob = CustomerFactory(), CustomerFactory()
    client.force_login(rep)
    client.get(f"{CHANGELIST}{ann.pk}/change/")
    client.get(f"{CHANGELIST}{bob.pk}/change/")
    assert client.get("/admin/customers/accesslog/").status_code == 403
    assert client.get(f"{CHANGELIST}{ann.pk}/history/").status_code == 200  # past values: a view too
    assert AccessLog.objects.filter(customer=ann, action="view").count() == 2
    AccessLog.objects.filter(customer=ann).order_by("-id")[:1].get().delete()
    boss = staff(ADMINISTRATOR, "boss")
    client.force_login(boss)
    listing = client.get("/admin/customers/accesslog/", {"user__id__exact": rep.pk})
    assert len(listing.context["cl"].result_list) == 2
    listing = client.get("/admin/customers/accesslog/", {"customer__id__exact": ann.pk})
    assert [entry.customer_id for entry in listing.context["cl"].result_list] == [ann.pk]
    listing = client.get("/admin/customers/accesslog/", {"q": bob.customer_number})
    assert [entry.customer_id for entry in listing.context["cl"].result_list] == [bob.pk]
    exported = services.export_customer_data(ann.pk)
    assert [row["action"] for row in exported["access_log"]] == ["view"]
    assert set(exported["access_log"][0]) == {"id", "user_id", "customer_id", "action", "reference", "at"}


def test_segment_member_and_consent_record_exports_are_in_the_access_log(client, staff):
    ann, bob, cid = CustomerFactory(), CustomerFactory(), CustomerFactory()
    segment = segment_services.segment_create(actor=SYSTEM, code="callback_list", name="Callback list")
    segment_services.segment_members_add(actor=SYSTEM, segment_id=segment.pk, customer_ids=[ann.pk, bob.pk])
    boss = staff(ADMINISTRATOR, "boss")
    client.force_login(boss)
    response = client.get(f"/admin/segments/segment/{segment.pk}/export/")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    exported = AccessLog.objects.filter(user=boss, action="export", reference="segment:callback_list")
    assert set(exported.values_list("customer_id", flat=True)) == {ann.pk, bob.pk}

    response = _action(client, "export_consent_records", [bob, cid])
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    audited = AccessLog.objects.filter(user=boss, action="export", reference="consent-records")
    assert set(audited.values_list("customer_id", flat=True)) == {bob.pk, cid.pk}


def test_access_log_keeps_rows_of_removed_staff_and_customers(client, staff, django_user_model):
    import uuid

    rep = staff(CUSTOMER_SERVICE, "rep-leaver")
    ann = CustomerFactory()
    client.force_login(rep)
    client.get(f"{CHANGELIST}{ann.pk}/change/")
    rep_id = rep.pk
    client.logout()
    django_user_model.objects.filter(pk=rep_id).delete()  # the account goes; its trail stays
    gone_customer = uuid.uuid4()
    boss = staff(ADMINISTRATOR, "boss")
    services.access_log_record(user=boss, customer_id=gone_customer, action="export", reference="r1")
    client.force_login(boss)
    listing = client.get("/admin/customers/accesslog/")
    rows = {(entry.user_id, entry.customer_id) for entry in listing.context["cl"].result_list}
    assert (rep_id, ann.pk) in rows and (boss.pk, gone_customer) in rows
    html = listing.content.decode()
    assert f"(removed user #{rep_id})" in html and str(gone_customer) in html and ann.customer_number in html
    filtered = client.get("/admin/customers/accesslog/", {"customer__id__exact": ann.pk})
    assert [entry.user_id for entry in filtered.context["cl"].result_list] == [rep_id]


# ---------------------------------------------------------------- exports


def _action(client, action, customers, **extra):
    return client.post(CHANGELIST, {"action": action, "_selected_action": [str(c.pk) for c in customers], **extra})


def test_a_small_export_streams_only_the_columns_the_user_may_see(client, staff):
    ann = CustomerFactory(email="ann@example.com", first_name="=HYPERLINK(1)", last_name="Lee")
    make_address(ann, make_default=True, country="DE")
    client.force_login(staff(CUSTOMER_SERVICE))
    response = _action(client, "export_csv", [ann])
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["customer_number"] == ann.customer_number
    assert "email" not in rows[0] and "shipping_line1" not in rows[0]  # reps export without personal data
    assert rows[0]["shipping_country"] == "DE"
    client.force_login(staff(COMPLIANCE))
    response = _action(client, "export_csv", [ann])
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["email"] == "ann@example.com" and rows[0]["shipping_postal_code"] == "10117"
    assert rows[0]["first_name"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    assert AccessLog.objects.filter(customer=ann, action="export").count() == 2
    response = _action(client, "export_xlsx", [ann])
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(response.content)).active
    header = [cell.value for cell in sheet[1]]
    assert header[0] == "customer_number" and sheet.cell(2, header.index("email") + 1).value == "ann@example.com"


def test_a_large_export_becomes_a_job_with_progress_and_a_download(
    client, staff, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(bulk_export, "DIRECT_EXPORT_LIMIT", 2)
    monkeypatch.setattr(bulk_export, "PROGRESS_EVERY_BYTES", 1)
    customers = [CustomerFactory() for _ in range(5)]
    officer = staff(COMPLIANCE, "officer")
    client.force_login(officer)
    everyone = {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": [customers[0].pk]}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(CHANGELIST, everyone)
    job = CustomerExportJob.objects.get()
    assert response.status_code == 302 and str(job.pk) in response["Location"]
    job.refresh_from_db()  # Celery runs eagerly in tests: the job is done
    assert job.status == "done" and job.rows_total == 5 and job.percent == 100
    page = client.get(reverse("admin:customers_customerexportjob_change", args=[job.pk]))
    assert b"Download" in page.content
    download = client.get(reverse("admin:customers_customerexportjob_download", args=[job.pk]))
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert sorted(row["customer_number"] for row in rows) == sorted(c.customer_number for c in customers)
    assert AccessLog.objects.filter(action="export", reference=str(job.pk)).count() == 5
    assert AccessLog.objects.filter(action="download", reference=str(job.pk)).count() == 5
    client.force_login(staff(CUSTOMER_SERVICE, "someone-else"))  # another's export is not theirs to take
    assert client.get(reverse("admin:customers_customerexportjob_download", args=[job.pk])).status_code == 404
    assert bulk_export.export_jobs_purge() == 0
    CustomerExportJob.objects.update(expires_at="2000-01-01T00:00:00Z")
    assert bulk_export.export_jobs_purge() == 1 and not Path(job.file_path).exists()


def test_export_start_decides_direct_job_and_the_spreadsheet_cap(client, staff, monkeypatch):
    from customers.errors import ValidationFailed

    monkeypatch.setattr(bulk_export, "DIRECT_EXPORT_LIMIT", 2)
    monkeypatch.setattr(bulk_export, "XLSX_MAX_ROWS", 2)
    officer = staff(COMPLIANCE, "officer")
    first, second = CustomerFactory(), CustomerFactory()
    small = bulk_export.export_start(user=officer, queryset=Customer.objects.all(), fmt="csv")
    assert small.job is None and small.count == 2 and small.content_type.startswith("text/csv")
    assert b"".join(small.body).count(b"\n") == 3
    CustomerFactory()
    large = bulk_export.export_start(user=officer, queryset=Customer.objects.all(), fmt="csv")
    assert large.job is not None and large.count == 3 and large.body is None
    with pytest.raises(ValidationFailed) as refused:
        bulk_export.export_start(user=officer, queryset=Customer.objects.all(), fmt="xlsx")
    assert refused.value.code == "EXPORT_TOO_LARGE"
    client.force_login(officer)  # the admin only shows the service's answer
    response = _action(client, "export_xlsx", [first, second], select_across="1", index="0")
    assert response.status_code == 302 and CustomerExportJob.objects.count() == 1
    assert "at most 2 rows" in client.get(response["Location"]).content.decode()


def _lost_worker(job, *, minutes_ago=60):
    """The worker claimed the job and died: no heartbeat since."""
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    claimed = bulk_export._claim(job.pk)
    assert claimed is not None and claimed.status == "running"
    cache.delete(bulk_export.heartbeat_key(job.pk))
    CustomerExportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=minutes_ago))


def test_a_job_left_running_by_a_dead_worker_is_run_again(staff, django_capture_on_commit_callbacks):
    officer = staff(COMPLIANCE, "officer")
    customers = [CustomerFactory() for _ in range(3)]
    job = bulk_export.export_job_create(user=officer, queryset=Customer.objects.all(), fmt="csv")  # not run
    _lost_worker(job)
    assert bulk_export._claim(job.pk) is None  # a running job is not claimed twice
    assert bulk_export.queued_jobs_requeue() == 1  # eager Celery: runs it again at once
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 2 and Path(job.file_path).exists()
    assert AccessLog.objects.filter(reference=str(job.pk), action="export").count() == len(customers)
    assert not list(Path(job.file_path).parent.glob("*.part"))


def test_a_running_job_with_a_fresh_heartbeat_is_left_alone_and_a_hopeless_one_fails(staff, settings):
    from django.core.cache import cache
    from django.utils import timezone

    officer = staff(COMPLIANCE, "officer")
    CustomerFactory()
    alive = bulk_export.export_job_create(user=officer, queryset=Customer.objects.all(), fmt="csv")
    _lost_worker(alive)
    cache.set(bulk_export.heartbeat_key(alive.pk), timezone.now().timestamp())  # it copies, beating to the cache
    assert bulk_export.running_jobs_recover() == {"requeued": [], "failed": []}
    alive.refresh_from_db()
    assert alive.status == "running" and alive.heartbeat_at > timezone.now() - bulk_export._stale_after()

    settings.CUSTOMER_EXPORT_MAX_ATTEMPTS = 1
    hopeless = bulk_export.export_job_create(user=officer, queryset=Customer.objects.all(), fmt="csv")
    _lost_worker(hopeless)
    assert bulk_export.running_jobs_recover() == {"requeued": [], "failed": [hopeless.pk]}
    hopeless.refresh_from_db()
    assert hopeless.status == "failed" and hopeless.error == "WorkerLost"


def test_a_slow_run_overtaken_by_the_sweep_drops_its_file(staff, monkeypatch):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory()
    job = bulk_export.export_job_create(user=officer, queryset=Customer.objects.all(), fmt="csv")
    real_write = bulk_export.write_csv_file

    def overtaken(path, *args, **kwargs):  # while this run copies, the sweep gives the job to a new run
        written = real_write(path, *args, **kwargs)
        CustomerExportJob.objects.filter(pk=job.pk).update(status="queued", attempts=5)
        return written

    monkeypatch.setattr(bulk_export, "write_csv_file", overtaken)
    bulk_export.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "queued" and not job.file_path
    assert not AccessLog.objects.filter(reference=str(job.pk)).exists()
    assert not list(bulk_export.export_directory().glob(f"{job.pk}*"))


def test_a_job_that_fails_after_writing_leaves_no_file_behind(staff, monkeypatch):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory()
    job = bulk_export.export_job_create(user=officer, queryset=Customer.objects.all(), fmt="csv")

    def broken_log(**kwargs):
        raise RuntimeError("the access log is unavailable")

    monkeypatch.setattr(bulk_export, "access_log_record_selection", broken_log)
    bulk_export.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.error == "RuntimeError" and not job.file_path
    assert not list(bulk_export.export_directory().glob(f"{job.pk}*"))  # no unlogged file to hand out


def test_purge_removes_failed_and_forgotten_queued_jobs_with_their_selection(staff, settings):
    from datetime import timedelta

    from django.utils import timezone

    officer = staff(COMPLIANCE, "officer")
    CustomerFactory(email="searched@example.com")
    selection = Customer.objects.filter(email__icontains="searched@example.com")
    old = timezone.now() - timedelta(days=settings.CUSTOMER_EXPORT_RETENTION_DAYS + 1)
    failed, forgotten, recent, done = (
        bulk_export.export_job_create(user=officer, queryset=selection, fmt="csv") for _ in range(4)
    )
    CustomerExportJob.objects.filter(pk=failed.pk).update(status="failed", created_at=old)
    CustomerExportJob.objects.filter(pk=forgotten.pk).update(created_at=old)
    CustomerExportJob.objects.filter(pk=done.pk).update(
        status="done", created_at=old, expires_at=timezone.now() + timedelta(days=1)
    )
    part = bulk_export.export_directory() / f"{failed.pk}.1.part"
    part.write_bytes(b"half a file")
    CustomerExportJob.objects.filter(pk=failed.pk).update(attempts=1)
    assert bulk_export.export_jobs_purge() == 2
    assert set(CustomerExportJob.objects.values_list("pk", flat=True)) == {recent.pk, done.pk}
    assert not part.exists()
    leftover = CustomerExportJob.objects.filter(selection_params__icontains="searched@example.com")
    assert set(leftover.values_list("pk", flat=True)) == {recent.pk, done.pk}


# ---------------------------------------------------------------- bulk work


def test_bulk_tag_segment_and_deactivate_go_through_the_services(client, staff):
    rep = staff(CUSTOMER_SERVICE, "rep1")
    ann, bob = CustomerFactory(tags=["vip"]), CustomerFactory()
    client.force_login(rep)
    form = _action(client, "add_tag", [ann, bob])
    assert form.status_code == 200 and b"Add a tag" in form.content
    _action(client, "add_tag", [ann, bob], apply="1", tag="call-back")
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert ann.tags == ["vip", "call-back"] and bob.tags == ["call-back"]
    assert OutboxEvent.objects.filter(event_type="customer.updated.v1").count() == 2
    _action(client, "remove_tag", [ann], apply="1", tag="vip")
    ann.refresh_from_db()
    assert ann.tags == ["call-back"]
    assert Customer.history.filter(id=ann.pk).latest("history_date").history_user == rep
    _action(client, "deactivate_customers", [bob], apply="1", reason="Asked to close the account")
    bob.refresh_from_db()
    assert bob.status == "inactive"

    segment = segment_services.segment_create(actor=SYSTEM, code="callback_list", name="Callback list")
    assert "assign_to_segment" not in client.get(CHANGELIST).context["action_form"].fields["action"].choices.__repr__()
    client.force_login(staff(ADMINISTRATOR, "boss"))
    _action(client, "assign_to_segment", [ann, bob], apply="1", segment=str(segment.pk))
    members = SegmentMembership.objects.filter(segment=segment, left_at__isnull=True)
    assert set(members.values_list("customer_id", flat=True)) == {ann.pk, bob.pk}


def test_customers_tags_change_is_set_based_with_history_and_events(staff):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from customers.validation import MAX_TAGS

    rep = staff(CUSTOMER_SERVICE, "rep1")
    actor = Actor.for_staff(rep)
    ann, bob = CustomerFactory(tags=["vip"]), CustomerFactory()
    full = CustomerFactory(tags=[f"t{n}" for n in range(MAX_TAGS)])
    gone = CustomerFactory()
    Customer.objects.filter(pk=gone.pk).update(status="merged")
    ids = [ann.pk, bob.pk, full.pk, gone.pk]
    with CaptureQueriesContext(connection) as few:
        result = services.customers_tags_change(actor=actor, customer_ids=ids, add=["call-back"])
    assert set(result.changed) == {ann.pk, bob.pk} and list(result.refused) == [full.pk]
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert ann.tags == ["vip", "call-back"] and bob.tags == ["call-back"] and ann.version == 2
    last = Customer.history.filter(id=ann.pk).latest("history_date")
    assert (last.history_user, last.history_actor, last.history_change_reason) == (rep, "staff:rep1", "updated: tags")
    events = OutboxEvent.objects.filter(event_type="customer.updated.v1")
    assert {event.subject for event in events} == {str(ann.pk), str(bob.pk)}
    assert all(event.data["changed_fields"] == ["tags"] for event in events)
    many = [CustomerFactory() for _ in range(6)]
    with CaptureQueriesContext(connection) as more:
        services.customers_tags_change(actor=actor, customer_ids=[c.pk for c in many] + ids, add=["other"])

    def own(queries):  # the timeline's subscriber adds one activity row per event on its own
        return [q for q in queries if "INSERT INTO customers_customeractivity" not in q["sql"]]

    assert len(own(more.captured_queries)) == len(own(few.captured_queries))  # set-based: not a query per customer
    removed = services.customers_tags_change(
        actor=actor, customer_ids=Customer.objects.filter(pk__in=[ann.pk]).values("pk"), remove=["vip"]
    )
    assert removed.changed == [ann.pk]
    ann.refresh_from_db()
    assert ann.tags == ["call-back", "other"]
    assert services.customers_tags_change(actor=actor, customer_ids=[ann.pk], remove=["vip"]).changed == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("migrated_data_restored")
def test_the_tag_action_loses_no_tag_written_meanwhile(client, staff):
    """The action reads each customer's tags under its row lock: a change committed while it waits survives."""
    import threading
    import time

    from django.db import connection, transaction

    ann = CustomerFactory(tags=["vip"])
    client.force_login(staff(CUSTOMER_SERVICE, "rep1"))
    holding, errors = threading.Event(), []

    def other_writer():
        try:
            with transaction.atomic():
                services.customer_update(actor=SYSTEM, customer_id=ann.pk, changes={"tags": ["vip", "from-api"]})
                holding.set()
                time.sleep(0.7)  # the action starts meanwhile and must wait for this commit
        except Exception as error:  # handed to the test below
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert holding.wait(timeout=10)
    _action(client, "add_tag", [ann], apply="1", tag="call-back")
    thread.join(timeout=30)
    assert errors == []
    ann.refresh_from_db()
    assert ann.tags == ["vip", "from-api", "call-back"]


# ---------------------------------------------------------------- import


def _upload(client, content: str, name="customers.csv"):
    return client.post(
        f"{CHANGELIST}import/",
        {"format": "0", "import_file": SimpleUploadedFile(name, content.encode(), content_type="text/csv"),
         "resource": "0"},
    )


def test_import_dry_run_shows_row_errors_then_imports_through_the_services(client, staff):
    existing = CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee")
    boss = staff(ADMINISTRATOR, "boss")
    client.force_login(boss)
    bad = "email,first_name,last_name,phone\nnot-an-email,X,Y,\nok@example.com,Ok,Row,12\n"
    response = _upload(client, bad)
    assert response.status_code == 200
    result = response.context["result"]
    assert result.has_validation_errors()
    errors = {row.number: row.error_dict for row in result.invalid_rows}
    assert set(errors) == {1, 2} and "email" in errors[1] and "phone" in errors[2]
    assert Customer.objects.count() == 1  # a dry run writes nothing

    good = (
        "email,first_name,last_name,phone,tags\n"
        "ANN@example.com,Ann,Lee-Smith,,vip;gold\n"
        "new@example.com,New,Person,+14155550000,\n"
    )
    response = _upload(client, good)
    assert not response.context["result"].has_validation_errors()
    confirm = response.context["confirm_form"]
    data = {name: confirm[name].value() for name in confirm.fields}
    response = client.post(f"{CHANGELIST}process_import/", data)
    assert response.status_code == 302
    existing.refresh_from_db()
    assert existing.last_name == "Lee-Smith" and existing.tags == ["vip", "gold"]  # updated by email, not inserted
    created = Customer.objects.get(email="new@example.com")
    assert created.registration_source == "import" and created.phone == "+14155550000"
    assert OutboxEvent.objects.filter(event_type="customer.created.v1", subject=str(created.pk)).exists()
    assert OutboxEvent.objects.filter(event_type="customer.updated.v1", subject=str(existing.pk)).exists()
    assert Customer.history.filter(id=existing.pk).latest("history_date").history_user == boss


def test_import_in_batches(monkeypatch, staff):
    from customers import importing

    monkeypatch.setattr(importing, "IMPORT_BATCH_ROWS", 2)
    import tablib

    dataset = tablib.Dataset(headers=["email", "first_name"])
    for index in range(5):
        dataset.append([f"batch{index}@example.com", f"B{index}"])
    dataset.append(["broken", "X"])
    result = importing.CustomerResource().import_data(dataset, dry_run=False, user=staff(ADMINISTRATOR))
    assert result.totals["new"] == 5 and [row.number for row in result.invalid_rows] == [6]
    assert Customer.objects.filter(email__startswith="batch").count() == 5


def test_customer_numbers_and_broad_searches(client, staff, monkeypatch):
    from customers import admin as customer_admin

    customers = [CustomerFactory(email=f"{name}@example.com", last_name="Lee") for name in ("ann", "bea", "cid")]
    ann = customers[0]
    client.force_login(staff(CUSTOMER_SERVICE))
    number = ann.customer_number  # e.g. C000000001
    assert found(client, number.lower()) == [ann]
    assert found(client, number.lstrip("C").lstrip("0")) == [ann]  # as said on the phone: "one"
    assert set(found(client, number[:6])) == set(customers)  # a prefix
    # a term matching more than the cap: counted up to the cap only, newest first, and the page says so
    monkeypatch.setattr(customer_admin, "COUNT_CAP", 2)
    response = client.get(CHANGELIST, {"q": "lee"})
    assert response.context["cl"].result_count == 3  # the cap + 1: "more than the cap"
    html = response.content.decode()
    assert "More than 2 customers: add a word to narrow the search" in html and "3 customers" not in html
    monkeypatch.setattr(customer_admin, "COUNT_CAP", 1_000)
    response = client.get(CHANGELIST, {"q": "lee"})
    assert response.context["cl"].result_count == 3
    html = response.content.decode()
    assert "3 customers" in html and "More than" not in html


def test_search_results_across_pages_keep_their_order(client, staff, monkeypatch):
    from django.contrib import admin as django_admin

    ann = CustomerFactory(email="ann@example.com", first_name="Zed", last_name="Lee")
    older = CustomerFactory(email="bea@example.com", first_name="Bea", last_name="Leeway")
    newer = CustomerFactory(email="cid@example.com", first_name="Cid", last_name="Leeds")
    monkeypatch.setattr(django_admin.site._registry[Customer], "list_per_page", 1)
    client.force_login(staff(CUSTOMER_SERVICE))
    pages = [list(client.get(CHANGELIST, {"q": "lee", "p": page}).context["cl"].result_list) for page in (1, 2, 3)]
    assert pages == [[ann], [newer], [older]]  # the exact last name, then the newest first


def test_an_xlsx_file_imports_like_a_csv(client, staff):
    import io

    from openpyxl import Workbook

    def upload(rows):
        workbook = Workbook()
        for row in [["email", "first_name", "last_name", "phone"], *rows]:
            workbook.active.append(row)
        content = io.BytesIO()
        workbook.save(content)
        file = SimpleUploadedFile(
            "customers.xlsx", content.getvalue(),
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        return client.post(f"{CHANGELIST}import/", {"format": xlsx, "import_file": file, "resource": "0"})

    client.force_login(staff(ADMINISTRATOR, "boss"))
    choices = dict(client.get(f"{CHANGELIST}import/").context["form"].fields["format"].choices)
    xlsx = next(index for index, label in choices.items() if str(label).lower() == "xlsx")
    good = ["xlsx.one@example.com", "Xia", "Lin", "+14155550101"]
    result = upload([good, ["not-an-email", "Bad", "Row", ""]]).context["result"]
    assert [row.number for row in result.invalid_rows] == [2] and "email" in result.invalid_rows[0].error_dict
    assert not Customer.objects.filter(email="xlsx.one@example.com").exists()  # the dry run wrote nothing

    confirm = upload([good]).context["confirm_form"]
    response = client.post(f"{CHANGELIST}process_import/", {name: confirm[name].value() for name in confirm.fields})
    assert response.status_code == 302
    created = Customer.objects.get(email="xlsx.one@example.com")
    assert (created.first_name, created.phone, created.registration_source) == ("Xia", "+14155550101", "import")
