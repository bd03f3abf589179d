"""A large export job writes its file and its access log at the same time, on two connections reading one
snapshot: the log holds exactly the exported customers, is committed before the job is done, and a failure
leaves neither a done job nor log rows behind."""

import csv
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from customers import access_log, bulk_export
from customers.models import AccessLog, Customer, CustomerExportJob
from customers.roles import COMPLIANCE
from tests.addresses.conftest import migrated_data_restored  # noqa: F401  (module fixture)
from tests.factories import CustomerFactory


@pytest.fixture(autouse=True)
def _export_dir(settings, tmp_path):
    settings.CUSTOMER_EXPORT_DIR = str(tmp_path / "exports")


def _queued_job(user, queryset=None, fmt="csv") -> CustomerExportJob:
    """A queued job, not run (export_job_create would run it at once: Celery is eager in tests)."""
    selection_sql, params = bulk_export.selection_of(queryset if queryset is not None else Customer.objects.all())
    return CustomerExportJob.objects.create(
        requested_by=user, format=fmt, columns=bulk_export.columns_for(user), selection_sql=selection_sql,
        selection_params=params,
    )


def _elsewhere(work):
    """Run `work` on another connection and commit it (the export's snapshot must not see it)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as error:  # handed to the test below
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _other_connections(wait: float = 5.0) -> int:
    """Client connections to the test database besides the test's own (a closed one may linger a moment)."""
    deadline = time.monotonic() + wait
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            count = cursor.fetchone()[0]
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def _exported_ids(job) -> set[str]:
    with Path(job.file_path).open(newline="") as handle:
        return {row["id"] for row in csv.DictReader(handle)}


def _logged_ids(job) -> set[str]:
    return {str(pk) for pk in AccessLog.objects.filter(action="export", reference=str(job.pk)).values_list(
        "customer_id", flat=True
    )}


def _spy_on_the_log(monkeypatch) -> list[dict]:
    """Where the access log's INSERT runs: thread, backend, isolation level."""
    seen, real = [], access_log.access_log_record_selection

    def spy(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), current_setting('transaction_isolation')")
            pid, isolation = cursor.fetchone()
        seen.append({"thread": threading.current_thread(), "pid": pid, "isolation": isolation})
        return real(**kwargs)

    monkeypatch.setattr(access_log, "access_log_record_selection", spy)
    return seen


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("migrated_data_restored")
def test_the_log_holds_exactly_the_exported_customers_not_one_created_meanwhile(staff, monkeypatch, fmt):
    officer = staff(COMPLIANCE, "officer")
    customers = [CustomerFactory() for _ in range(3)]
    job = _queued_job(officer, fmt=fmt)
    seen = _spy_on_the_log(monkeypatch)
    late = []
    writer = "write_csv_file" if fmt == "csv" else "write_xlsx"
    real_write = getattr(bulk_export, writer)

    def write_after_a_signup(*args, **kwargs):  # the snapshot is taken: a customer signs up, then the COPY runs
        late.append(_elsewhere(lambda: CustomerFactory()))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(bulk_export, writer, write_after_a_signup)
    main_pid = connection.cursor().connection.info.backend_pid
    bulk_export.export_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "done" and job.rows_total == job.rows_done == 3
    assert Customer.objects.filter(pk=late[0].pk).exists()  # it was committed, but after the snapshot
    expected = {str(customer.pk) for customer in customers}
    assert _logged_ids(job) == expected
    if fmt == "csv":
        assert _exported_ids(job) == expected
    # the log was written by another thread, on its own connection, in the shared snapshot
    assert len(seen) == 1 and seen[0]["thread"] is not threading.current_thread()
    assert seen[0]["pid"] != main_pid and seen[0]["isolation"] == "repeatable read"
    assert _other_connections() == 0  # the log's connection (and the signup's) closed


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("migrated_data_restored")
def test_a_failure_after_the_log_was_committed_leaves_no_done_job_and_no_log(staff, monkeypatch):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory.create_batch(2)
    job = _queued_job(officer)
    committed = []
    real_commit = access_log.SelectionLogInSnapshot.commit

    def commit_then_break(self):
        real_commit(self)
        committed.append(_elsewhere(lambda: AccessLog.objects.filter(reference=str(job.pk)).count()))
        raise OSError("the disk is full")  # e.g. renaming the file fails after the log is in

    monkeypatch.setattr(access_log.SelectionLogInSnapshot, "commit", commit_then_break)
    _run_and_expect_failure(job, "OSError")  # the log forgotten: no export was made
    assert committed == [2]  # it really was committed, and seen by others, before the failure


def _run_and_expect_failure(job, error: str) -> None:
    bulk_export.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.error == error and not job.file_path
    assert not AccessLog.objects.filter(reference=str(job.pk)).exists()  # nothing logged, or rolled back
    assert not list(bulk_export.export_directory().glob(f"{job.pk}*"))
    assert _other_connections() == 0


def _broken(error):
    def broken(*args, **kwargs):
        raise error

    return broken


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("migrated_data_restored")
def test_a_failing_log_or_file_fails_the_job_with_nothing_logged(staff, monkeypatch):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory()
    with monkeypatch.context() as patch:
        patch.setattr(access_log, "access_log_record_selection", _broken(RuntimeError("the log is unavailable")))
        _run_and_expect_failure(_queued_job(officer), "RuntimeError")
    with monkeypatch.context() as patch:
        patch.setattr(bulk_export, "write_csv_file", _broken(OSError("the disk is full")))
        _run_and_expect_failure(_queued_job(officer), "OSError")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("migrated_data_restored")
def test_a_run_overtaken_by_the_sweep_commits_no_log(staff, monkeypatch):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory()
    job = _queued_job(officer)
    real_wait = access_log.SelectionLogInSnapshot.wait_written

    def logged_then_overtaken(self):  # file and log written; the sweep gave the job to a new run meanwhile
        rows = real_wait(self)
        _elsewhere(lambda: CustomerExportJob.objects.filter(pk=job.pk).update(status="queued", attempts=5))
        return rows

    monkeypatch.setattr(access_log.SelectionLogInSnapshot, "wait_written", logged_then_overtaken)
    bulk_export.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.file_path) == ("queued", 5, "")
    assert not AccessLog.objects.filter(reference=str(job.pk)).exists()  # rolled back, never committed
    assert not list(bulk_export.export_directory().glob(f"{job.pk}*"))
    assert _other_connections() == 0


@pytest.mark.django_db
def test_the_log_of_a_run_that_died_after_committing_it_is_forgotten(staff, settings):
    """A worker that died between committing the log and DONE: the next run, or the sweep giving up, drops
    those rows (a later run logs its own; the log never counts an export twice or one never made)."""
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    officer = staff(COMPLIANCE, "officer")
    customers = [CustomerFactory() for _ in range(2)]

    def died_after_logging(job):
        claimed = bulk_export._claim(job.pk)
        access_log.access_log_record_selection(
            user=officer, selection_sql=job.selection_sql, params=job.selection_params, action="export",
            reference=str(job.pk),
        )
        cache.delete(bulk_export.heartbeat_key(job.pk))
        CustomerExportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        return claimed

    job = _queued_job(officer)
    access_log.access_log_record(user=officer, customer_id=customers[0].pk, action="view", reference=str(job.pk))
    died_after_logging(job)
    assert bulk_export.running_jobs_recover()["requeued"] == [job.pk]
    bulk_export.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 2
    assert AccessLog.objects.filter(reference=str(job.pk), action="export").count() == len(customers)
    assert AccessLog.objects.filter(reference=str(job.pk), action="view").count() == 1  # not an export's

    settings.CUSTOMER_EXPORT_MAX_ATTEMPTS = 1
    hopeless = _queued_job(officer)
    died_after_logging(hopeless)
    assert bulk_export.running_jobs_recover()["failed"] == [hopeless.pk]
    assert not AccessLog.objects.filter(reference=str(hopeless.pk)).exists()


@pytest.mark.django_db
def test_the_csv_file_is_written_in_blocks_with_progress_and_copys_count(staff, monkeypatch, tmp_path):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory(first_name="Two\nlines")  # a line break inside a value: COPY's count still says one row
    CustomerFactory.create_batch(3)
    names = bulk_export.columns_for(officer)
    selection_sql, params = bulk_export.selection_of(Customer.objects.all())
    streamed = b"".join(bulk_export.copy_csv(names, selection_sql, params, ordered=False))
    monkeypatch.setattr(bulk_export, "WRITE_BLOCK_BYTES", 100)
    monkeypatch.setattr(bulk_export, "PROGRESS_EVERY_BYTES", 1)
    reported = []
    path = tmp_path / "customers.csv"
    assert bulk_export.write_csv_file(path, names, selection_sql, params, reported.append) == 4
    assert path.read_bytes() == streamed
    assert reported and reported == sorted(reported) and reported[-1] <= 5


@pytest.mark.django_db
def test_a_running_job_of_everyone_shows_the_planners_estimate_then_the_exact_count(staff, monkeypatch):
    officer = staff(COMPLIANCE, "officer")
    CustomerFactory.create_batch(3)
    everyone = bulk_export.selection_of(Customer.objects.all())
    assert everyone[0] == bulk_export.ALL_CUSTOMERS
    assert bulk_export.selection_count(*everyone, estimate_everyone=True) == 3  # never analyzed: counted
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE customers_customer")
        cursor.execute("UPDATE pg_class SET reltuples = 1000 WHERE oid = 'customers_customer'::regclass")
    assert bulk_export.selection_count(*everyone, estimate_everyone=True) == 1000
    assert bulk_export.selection_count(*everyone) == 3
    totals = []
    real_write = bulk_export.write_csv_file

    def write(*args, **kwargs):
        totals.append(CustomerExportJob.objects.get(pk=job.pk).rows_total)  # what the admin shows meanwhile
        return real_write(*args, **kwargs)

    monkeypatch.setattr(bulk_export, "write_csv_file", write)
    job = _queued_job(officer)
    bulk_export.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert totals == [1000] and job.status == "done" and job.rows_total == job.rows_done == 3
