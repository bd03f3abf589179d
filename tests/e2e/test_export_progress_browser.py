"""A large export in a real browser: the job page shows the running job, refreshes itself, and
offers the download once the worker is done.

The worker is `bulk_export.export_job_run` itself, run (as Celery runs it in tests: eagerly) in a
thread of its own. It is held mid-export by a lock on the address book, which its COPY reads, so
the page can be looked at while the job is running; the lock is released from the browser's side.
"""

import csv
import io
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.urls import reverse

from customers import bulk_export
from customers.models import AccessLog, Customer, CustomerExportJob, ExportJobStatus
from customers.roles import COMPLIANCE
from tests.addresses.conftest import migrated_data_restored  # noqa: F401  (module fixture)
from tests.e2e.browser import in_a_browser, screenshot
from tests.e2e.test_backoffice_flow import _staff
from tests.factories import CustomerFactory

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]


def _wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _address_book_locked() -> psycopg.Connection:
    """A second session holding the address book: the export's COPY (which joins it) waits for it."""
    settings = connection.settings_dict
    blocker = psycopg.connect(
        dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"], port=settings["PORT"] or 5432
    )
    blocker.execute("LOCK TABLE addresses_address IN ACCESS EXCLUSIVE MODE")  # psycopg opened a transaction
    return blocker


def test_the_job_page_shows_progress_then_the_download_link(live_server, django_user_model, monkeypatch):
    monkeypatch.setattr(bulk_export, "DIRECT_EXPORT_LIMIT", 2)
    officer = _staff(django_user_model, "export-e2e", COMPLIANCE)
    customers = [CustomerFactory() for _ in range(5)]
    blocker = _address_book_locked()
    worker_failures = []

    def worker():
        try:
            selection = Customer.objects.filter(pk__in=[customer.pk for customer in customers])
            bulk_export.export_job_create(user=officer, queryset=selection, fmt="csv")  # runs it on commit
        except BaseException as error:
            worker_failures.append(error)
        finally:
            connection.close()

    exporting = threading.Thread(target=worker)
    exporting.start()

    def scenario(page, url, found):
        job = _wait_for(lambda: CustomerExportJob.objects.filter(status=ExportJobStatus.RUNNING).first())
        found["job"] = job.pk
        page.goto(f"{url}{reverse('admin:customers_customerexportjob_change', args=[job.pk])}")
        found["running"] = {
            "status": page.text_content(".field-status .readonly").strip(),
            "progress": page.get_attribute(".field-progress progress", "value"),
            "refreshes": page.locator("meta[http-equiv=refresh]").count(),
            "download": page.locator("a.export-download").count(),
        }
        screenshot(page, "export-running")
        blocker.rollback()  # the worker goes on; the page must notice by itself
        page.wait_for_selector("a.export-download", timeout=20000)
        found["done"] = {
            "status": page.text_content(".field-status .readonly").strip(),
            "progress": page.get_attribute(".field-progress progress", "value"),
            "refreshes": page.locator("meta[http-equiv=refresh]").count(),
        }
        screenshot(page, "export-done")
        with page.expect_download() as download:
            page.click("a.export-download")
        found["csv"] = Path(download.value.path()).read_text()

    try:
        found = in_a_browser(live_server, "export-e2e", scenario)
    finally:
        blocker.rollback()
        blocker.close()
        exporting.join(timeout=60)
    assert not exporting.is_alive() and not worker_failures

    assert found["running"] == {"status": "Running", "progress": "0", "refreshes": 1, "download": 0}
    assert found["done"] == {"status": "Done", "progress": "100", "refreshes": 0}
    rows = list(csv.DictReader(io.StringIO(found["csv"])))
    assert sorted(row["customer_number"] for row in rows) == sorted(c.customer_number for c in customers)
    logged = AccessLog.objects.filter(reference=str(found["job"]), user=officer)
    assert sorted(logged.values_list("action", flat=True)) == ["download"] * 5 + ["export"] * 5
