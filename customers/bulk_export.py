"""Customer exports for staff (CSV, XLSX): a selection or a whole filter result.

The rows are produced by PostgreSQL: one SELECT over the customers (and, through the address
book's registered join, their default shipping address), streamed as CSV by `COPY … TO STDOUT`,
so a million rows cost little more than PostgreSQL's own COPY. XLSX goes through openpyxl's
write-only mode from a server-side cursor. Up to `DIRECT_EXPORT_LIMIT` rows are streamed in the
response; more become a `CustomerExportJob` that a Celery worker writes in batches (progress on
the job) to a file outside the web root, for the requester to download.

Columns follow the data classification: personal ones only for holders of
`customers.export_customer_personal_data`. Cells that a spreadsheet would run as a formula are
prefixed with a quote. Every exported customer gets an access-log row.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC as dt_timezone
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from customers.access_log import SelectionLogInSnapshot, access_log_forget, access_log_record_selection
from customers.data_rights import json_value
from customers.errors import Forbidden, NotFound, ValidationFailed
from customers.extensions import address_lookup
from customers.models import AccessAction, CustomerExportJob, ExportFormat, ExportJobStatus

logger = logging.getLogger(__name__)

DIRECT_EXPORT_LIMIT = 10_000  # above this, a Celery job writes the file
STALE_AFTER_MINUTES = 30  # a running job without a heartbeat this long lost its worker
MAX_ATTEMPTS = 3  # runs of one job before the sweep gives up on it
XLSX_MAX_ROWS = 1_048_575  # a worksheet holds 1,048,576 rows, the header being one of them
PROGRESS_EVERY_BYTES = 8 * 1024 * 1024  # a running job reports its progress this often
PROGRESS_EVERY_ROWS = 50_000
ALL_CUSTOMERS = ""  # the selection of a queryset without filters: no `IN (…)` to join against


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    personal: bool
    escape: bool = True  # may start with = + - @: quote it for spreadsheets


def _customer_columns() -> list[Column]:
    return [
        Column("customer_number", "c.customer_number", False, escape=False),
        Column("id", "c.id::text", False, escape=False),
        Column("status", "c.status", False, escape=False),
        Column("customer_type", "c.customer_type", False, escape=False),
        Column("email", "c.email", True),
        Column("first_name", "c.first_name", True),
        Column("last_name", "c.last_name", True),
        Column("phone", "c.phone", True, escape=False),  # E.164: + and digits only
        Column("company_name", "c.company_name", True),
        Column("date_of_birth", "c.date_of_birth::text", True, escape=False),
        Column("registration_source", "c.registration_source", False, escape=False),
        Column("tags", "array_to_string(c.tags, ';')", True),
        Column("processing_restricted", "c.processing_restricted", False, escape=False),
        Column("order_count", "c.order_count", False, escape=False),
        Column("total_spent", "c.total_spent", False, escape=False),
        Column("spent_currency", "c.spent_currency", False, escape=False),
        Column("last_order_at", "c.last_order_at", False, escape=False),
        Column("loyalty_points", "c.loyalty_points", False, escape=False),
        Column("created_at", "c.created_at", False, escape=False),
    ]


def all_columns() -> list[Column]:
    columns = _customer_columns()
    lookup = address_lookup()
    if lookup is not None:
        columns += [Column(name, sql, personal) for name, sql, personal in lookup.export_columns]
    return columns


def columns_for(user) -> list[str]:
    """The columns this staff user may export: personal ones only with export_customer_personal_data."""
    if not user.has_perm("customers.export_customer"):
        raise Forbidden("You may not export customers.")
    personal = user.has_perm("customers.export_customer_personal_data")
    return [column.name for column in all_columns() if personal or not column.personal]


def _expression(column: Column) -> str:
    if not column.escape:
        return f'{column.sql} AS "{column.name}"'
    # left(…, 1) IN (…) rather than a regular expression: a million rows times ten columns.
    return (
        f"CASE WHEN left({column.sql}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || {column.sql} "
        f'ELSE {column.sql} END AS "{column.name}"'
    )


def _select(names: list[str], selection_sql: str, *, ordered: bool = True) -> str:
    by_name = {column.name: column for column in all_columns()}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValidationFailed(f"Unknown export columns: {', '.join(unknown)}.")
    lookup = address_lookup()
    address_columns = {name for name, _, _ in lookup.export_columns} if lookup is not None else set()
    join = lookup.export_join if lookup is not None and address_columns.intersection(names) else ""
    expressions = ", ".join(_expression(by_name[name]) for name in names)
    where = f"WHERE c.id IN ({selection_sql})" if selection_sql else ""
    order = "ORDER BY c.customer_number" if ordered else ""
    return f"SELECT {expressions} FROM customers_customer c {join} {where} {order}"  # noqa: S608 - ours


def selection_of(queryset: QuerySet) -> tuple[str, list]:
    """The ids a customer queryset selects, as SQL and JSON-ready parameters (for a job to run later).

    A queryset without filters selects every customer: ALL_CUSTOMERS, so the export reads the table
    once instead of joining it with itself.
    """
    if not queryset.query.where:
        return ALL_CUSTOMERS, []
    sql, params = queryset.values("pk").order_by().query.sql_with_params()
    return sql, [json_value(param) for param in params]


def selection_count(selection_sql: str, params: list, *, estimate_everyone: bool = False) -> int:
    """How many customers the selection holds. For every customer, with `estimate_everyone`, the
    planner's estimate (pg_class.reltuples, kept by VACUUM/ANALYZE) when there is one: a running job's
    progress needs a total, not an exact one (the job's final count is COPY's)."""
    with connection.cursor() as cursor:
        if estimate_everyone and not selection_sql:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'customers_customer'::regclass")
            estimate = cursor.fetchone()[0]
            if estimate > 0:  # -1: never analyzed
                return estimate
        source = f"({selection_sql}) AS s" if selection_sql else "customers_customer"
        cursor.execute(f"SELECT count(*) FROM {source}", params)  # noqa: S608 - our ORM's SQL
        return cursor.fetchone()[0]


# ---------------------------------------------------------------- writing


def copy_csv(names: list[str], selection_sql: str, params: list, *, ordered: bool = True, copied: list | None = None):
    """Yield the CSV bytes of the selection, straight from PostgreSQL's COPY; at the end, the number of
    rows copied (COPY's own count) is appended to `copied` when given."""
    for chunk in _copy_chunks(names, selection_sql, params, ordered=ordered, copied=copied):
        yield bytes(chunk)


def _copy_chunks(names: list[str], selection_sql: str, params: list, *, ordered: bool, copied: list | None):
    """COPY's chunks as psycopg hands them over (a row each, a buffer valid until the next one)."""
    statement = f"COPY ({_select(names, selection_sql, ordered=ordered)}) TO STDOUT WITH (FORMAT csv, HEADER)"
    with connection.cursor() as cursor:
        with cursor.cursor.copy(statement, params) as copy:
            yield from copy
        if copied is not None:
            copied.append(cursor.cursor.rowcount)


def _xlsx_rows(names: list[str], selection_sql: str, params: list) -> Iterator[tuple]:
    with transaction.atomic():  # a server-side cursor lives in a transaction
        cursor = connection.chunked_cursor()
        try:
            cursor.execute(_select(names, selection_sql), params)
            while rows := cursor.fetchmany(2000):
                yield from rows
        finally:
            cursor.close()


def write_xlsx(handle, names: list[str], selection_sql: str, params: list, progress=None) -> int:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("customers")
    sheet.append(names)
    count = 0
    for row in _xlsx_rows(names, selection_sql, params):
        sheet.append([value if not hasattr(value, "tzinfo") else value.replace(tzinfo=None) for value in row])
        count += 1
        if progress is not None and count % PROGRESS_EVERY_ROWS == 0:
            progress(count)
    workbook.save(handle)
    return count


def export_filename(fmt: str, stamp=None) -> str:
    stamp = (stamp or timezone.now()).strftime("%Y%m%dT%H%M%SZ")
    return f"customers-{stamp}.{fmt}"


def stream_direct(*, user, queryset: QuerySet, fmt: str) -> tuple[Iterator[bytes] | bytes, str]:
    """A small export, in the response: (body or chunks, content type). Logs the access first."""
    names = columns_for(user)
    selection_sql, params = selection_of(queryset)
    access_log_record_selection(
        user=user, selection_sql=selection_sql, params=params, action=AccessAction.EXPORT, reference="direct"
    )
    if fmt == ExportFormat.CSV:
        return copy_csv(names, selection_sql, params), "text/csv; charset=utf-8"
    buffer = io.BytesIO()
    write_xlsx(buffer, names, selection_sql, params)
    return buffer.getvalue(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class ExportStarted:
    """What `export_start` did: streamed `body` now (small) or queued `job` (large)."""

    count: int
    job: CustomerExportJob | None = None
    body: object = None  # bytes (XLSX) or an iterator of CSV chunks
    content_type: str = ""


def export_start(*, user, queryset: QuerySet, fmt: str) -> ExportStarted:
    """Export a selection: up to DIRECT_EXPORT_LIMIT rows in the response, more as a job; XLSX up to a sheet."""
    if fmt not in ExportFormat.values:
        raise ValidationFailed("Unknown export format.", errors={"format": ["csv or xlsx"]})
    columns_for(user)  # refuses before counting
    queryset = queryset.order_by()
    count = queryset.count()
    if fmt == ExportFormat.XLSX and count > XLSX_MAX_ROWS:
        raise ValidationFailed(
            f"A spreadsheet holds at most {XLSX_MAX_ROWS:,} rows ({count:,} selected): export CSV.",
            code="EXPORT_TOO_LARGE",
        )
    if count > DIRECT_EXPORT_LIMIT:
        return ExportStarted(count=count, job=export_job_create(user=user, queryset=queryset, fmt=fmt))
    body, content_type = stream_direct(user=user, queryset=queryset, fmt=fmt)
    return ExportStarted(count=count, body=body, content_type=content_type)


# ---------------------------------------------------------------- jobs


def export_directory() -> Path:
    directory = Path(settings.CUSTOMER_EXPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def export_job_create(*, user, queryset: QuerySet, fmt: str) -> CustomerExportJob:
    """Queue a large export; the Celery task starts once the job is committed."""
    if fmt not in ExportFormat.values:
        raise ValidationFailed("Unknown export format.", errors={"format": ["csv or xlsx"]})
    names = columns_for(user)
    selection_sql, params = selection_of(queryset)
    with transaction.atomic():
        job = CustomerExportJob.objects.create(
            requested_by=user, format=fmt, columns=names, selection_sql=selection_sql, selection_params=params
        )
        transaction.on_commit(lambda: _queue(job.pk))
    return job


def _queue(job_id) -> None:
    from customers import tasks

    try:
        tasks.run_customer_export.delay(str(job_id))
    except Exception:  # the job stays queued; the beat sweep picks it up again
        logger.exception("could not queue customer export %s", job_id)


def _claim(job_id) -> CustomerExportJob | None:
    with transaction.atomic():
        job = (
            CustomerExportJob.objects.select_for_update(skip_locked=True)
            .filter(pk=job_id, status=ExportJobStatus.QUEUED)
            .first()
        )
        if job is None:
            return None
        job.status = ExportJobStatus.RUNNING
        job.started_at = job.heartbeat_at = timezone.now()
        job.attempts += 1
        job.save(update_fields=["status", "started_at", "heartbeat_at", "attempts"])
    cache.delete(progress_key(job.pk))  # a previous, lost run's progress
    _beat(job)
    return job


def heartbeat_key(job_id) -> str:
    return f"customer-export-heartbeat:{job_id}"


def _beat(job: CustomerExportJob) -> None:
    """The worker is alive (to the cache: while it copies, its database connection is busy)."""
    cache.set(heartbeat_key(job.pk), timezone.now().timestamp(), timeout=24 * 3600)


def _stale_after() -> timedelta:
    return timedelta(minutes=getattr(settings, "CUSTOMER_EXPORT_STALE_MINUTES", STALE_AFTER_MINUTES))


def _max_attempts() -> int:
    return getattr(settings, "CUSTOMER_EXPORT_MAX_ATTEMPTS", MAX_ATTEMPTS)


def _mine(job: CustomerExportJob):
    """This run's job row: nothing matches once the sweep handed the job to another run."""
    return CustomerExportJob.objects.filter(pk=job.pk, status=ExportJobStatus.RUNNING, attempts=job.attempts)


def progress_key(job_id) -> str:
    return f"customer-export-progress:{job_id}"


def _progress(job: CustomerExportJob, done: int) -> None:
    """While the worker writes, progress goes to the cache (the database connection is busy copying)."""
    cache.set(progress_key(job.pk), min(done, job.rows_total), timeout=24 * 3600)
    _beat(job)


def rows_done(job: CustomerExportJob) -> int:
    if job.status == ExportJobStatus.RUNNING:
        return int(cache.get(progress_key(job.pk)) or job.rows_done)
    return job.rows_done


WRITE_BLOCK_BYTES = 1024 * 1024  # the file is written (and its lines counted) a block at a time


def write_csv_file(path: Path, names: list[str], selection_sql: str, params: list, progress=None) -> int:
    """The whole selection as CSV in one COPY (file order: as PostgreSQL reads it); returns the data rows
    (COPY's count).

    COPY hands over a row at a time: they are gathered into blocks, so the Python work per row is one
    append (a million rows; the job's access log is written meanwhile on the other core). Progress counts
    line ends (a value holding a line break makes it run ahead a little).
    """
    lines, size, reported, copied = 0, 0, 0, []
    block = bytearray()
    with path.open("wb") as handle:
        for chunk in _copy_chunks(names, selection_sql, params, ordered=False, copied=copied):
            block += chunk
            if len(block) >= WRITE_BLOCK_BYTES:
                handle.write(block)
                lines, size = lines + block.count(b"\n"), size + len(block)
                block.clear()
                if progress is not None and size - reported >= PROGRESS_EVERY_BYTES:
                    reported = size
                    progress(max(lines - 1, 0))
        handle.write(block)
        lines += block.count(b"\n")
    return copied[0] if copied else max(lines - 1, 0)


class ExportLogMismatch(RuntimeError):
    """The file and the access log counted different customers: neither may stand."""


def _write_file(job: CustomerExportJob, temporary: Path) -> int:
    progress = partial(_progress, job)
    if job.format == ExportFormat.CSV:
        return write_csv_file(temporary, job.columns, job.selection_sql, job.selection_params, progress)
    with temporary.open("wb") as handle:
        return write_xlsx(handle, job.columns, job.selection_sql, job.selection_params, progress)


def _export_log(job: CustomerExportJob, stamp, snapshot: str | None = None):
    arguments = {
        "user": job.requested_by,
        "selection_sql": job.selection_sql,
        "params": job.selection_params,
        "action": AccessAction.EXPORT,
        "reference": str(job.pk),
        "at": stamp,
    }
    if snapshot is None:
        return access_log_record_selection(**arguments)
    return SelectionLogInSnapshot(snapshot=snapshot, **arguments).start()


def _forget_export_log(job: CustomerExportJob, stamp=None) -> None:
    access_log_forget(action=AccessAction.EXPORT, reference=str(job.pk), since=job.created_at, at=stamp)


def export_job_run(*, job_id) -> CustomerExportJob | None:
    """Write the export file of a queued job (a job already running or finished is left alone).

    The file and the access log read one snapshot, so exactly the exported customers are logged: the
    COPY runs in a REPEATABLE READ transaction that exports its snapshot (`pg_export_snapshot()`), and a
    second connection writes the log in it meanwhile (`SelectionLogInSnapshot`). Its rows are committed
    once this run knows the job is still its own, before the job is marked DONE (a file is never
    downloadable without its log); a failure after that removes them again (the log says exports made).
    Inside a caller's transaction (a snapshot cannot be exported from a savepoint, and another
    connection would not see the caller's rows) the log is written after the file, in the final
    transaction.
    """
    job = _claim(job_id)
    if job is None:
        return None
    stamp = timezone.now()  # every log row of this run: told apart from another run's of the same job
    log: SelectionLogInSnapshot | None = None
    log_committed = False
    try:
        if job.attempts > 1:  # an earlier run may have committed its log and died before DONE
            _forget_export_log(job)
        # the total shown while the file is written (exact once done: COPY's count)
        job.rows_total = selection_count(job.selection_sql, job.selection_params, estimate_everyone=True)
        _mine(job).update(rows_total=job.rows_total, heartbeat_at=timezone.now())
        path = export_directory() / f"{job.pk}.{job.format}"
        temporary = path.with_suffix(f".{job.attempts}.part")  # a lost run's file is not this run's
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(descriptor)
        if connection.in_atomic_block:
            written = _write_file(job, temporary)
        else:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cursor.execute("SELECT pg_export_snapshot()")
                    snapshot = cursor.fetchone()[0]
                log = _export_log(job, stamp, snapshot)
                written = _write_file(job, temporary)
                logged = log.wait_written()
            if logged != written:
                raise ExportLogMismatch(f"{written} rows written, {logged} logged")
        with transaction.atomic():
            if _mine(job).select_for_update().first() is None:  # recovered meanwhile: the newer run finishes
                temporary.unlink(missing_ok=True)
                logger.warning("customer export %s was handed to another run; this run's file dropped", job.pk)
                job.refresh_from_db()
                return job
            if log is None:
                _export_log(job, stamp)
            else:
                log_committed = True  # from here on, it may be: forget it on failure
                log.commit()
            temporary.replace(path)
            now = timezone.now()
            _mine(job).update(
                status=ExportJobStatus.DONE,
                rows_total=written,
                rows_done=written,
                file_path=str(path),
                finished_at=now,
                heartbeat_at=now,
                expires_at=now + timedelta(days=settings.CUSTOMER_EXPORT_RETENTION_DAYS),
            )
    except Exception as error:
        logger.exception("customer export %s failed", job.pk)
        if log_committed:
            _forget_export_log(job, stamp)
        if _mine(job).update(status=ExportJobStatus.FAILED, error=type(error).__name__, finished_at=timezone.now()):
            # this run's file, unfinished or not logged: no download may hand it out
            (export_directory() / f"{job.pk}.{job.format}").unlink(missing_ok=True)
        (export_directory() / f"{job.pk}.{job.attempts}.part").unlink(missing_ok=True)
    finally:
        if log is not None:
            log.close()  # rolls back what was not committed; its connection is closed
    job.refresh_from_db()
    return job


def export_job_download(*, user, job_id) -> CustomerExportJob:
    """The finished job, for its requester (or an administrator); the download is logged per customer."""
    job = CustomerExportJob.objects.filter(pk=job_id).first()
    if job is None or (job.requested_by_id != user.pk and not user.is_superuser and not user.has_perm(
        "customers.change_customerexportjob"
    )):
        raise NotFound("No such export.", code="EXPORT_NOT_FOUND")
    if job.status != ExportJobStatus.DONE or not job.file_path or not Path(job.file_path).exists():
        raise NotFound("The export file is not ready or has expired.", code="EXPORT_NOT_READY")
    access_log_record_selection(
        user=user,
        selection_sql=job.selection_sql,
        params=job.selection_params,
        action=AccessAction.DOWNLOAD,
        reference=str(job.pk),
    )
    return job


def export_jobs_purge(*, now=None) -> int:
    """Remove expired export files and their jobs; failed jobs and jobs queued but never run, once as old as
    the retention. Deleting the row drops its selection too (its parameters may hold a searched email)."""
    now = now or timezone.now()
    old = now - timedelta(days=settings.CUSTOMER_EXPORT_RETENTION_DAYS)
    gone = list(
        CustomerExportJob.objects.filter(
            Q(expires_at__lt=now)
            | Q(status=ExportJobStatus.FAILED, created_at__lt=old)
            | Q(status=ExportJobStatus.QUEUED, created_at__lt=old)
        ).only("pk", "file_path", "attempts")
    )
    for job in gone:
        if job.file_path:
            Path(job.file_path).unlink(missing_ok=True)
        for attempt in range(job.attempts + 1):  # any run's unfinished file
            Path(export_directory() / f"{job.pk}.{attempt}.part").unlink(missing_ok=True)
    CustomerExportJob.objects.filter(pk__in=[job.pk for job in gone]).delete()
    return len(gone)


def running_jobs_recover(*, now=None) -> dict[str, list]:
    """Jobs left RUNNING by a worker that died (no heartbeat for STALE_AFTER_MINUTES): back to the queue,
    or failed after MAX_ATTEMPTS runs. Returns the ids of both. A run that was only slow finds its job
    handed over when it ends and drops its file (see `_mine`)."""
    now = now or timezone.now()
    limit = now - _stale_after()
    outcome: dict[str, list] = {"requeued": [], "failed": []}
    candidates = CustomerExportJob.objects.filter(status=ExportJobStatus.RUNNING, heartbeat_at__lt=limit)
    for job in candidates.only("pk", "attempts", "created_at"):
        beat = cache.get(heartbeat_key(job.pk))
        lost = CustomerExportJob.objects.filter(pk=job.pk, status=ExportJobStatus.RUNNING, attempts=job.attempts)
        if beat is not None and beat >= limit.timestamp():  # alive: it beats to the cache while copying
            lost.update(heartbeat_at=datetime.fromtimestamp(beat, tz=dt_timezone.utc))
            continue
        if job.attempts >= _max_attempts():
            if lost.update(status=ExportJobStatus.FAILED, error="WorkerLost", finished_at=now):
                _forget_export_log(job)  # of a run that died between committing its log and DONE
                outcome["failed"].append(job.pk)
        elif lost.update(status=ExportJobStatus.QUEUED, heartbeat_at=None):
            outcome["requeued"].append(job.pk)
    return outcome


def queued_jobs_requeue(*, older_than: timedelta = timedelta(minutes=5)) -> int:
    """Jobs whose task was lost (a broker outage at commit, or a worker that died running it): queue them
    again."""
    recovered = running_jobs_recover()["requeued"]
    stale = CustomerExportJob.objects.filter(
        status=ExportJobStatus.QUEUED, created_at__lt=timezone.now() - older_than
    ).exclude(pk__in=recovered)
    job_ids = [*recovered, *stale.values_list("pk", flat=True)]
    for job_id in job_ids:
        _queue(job_id)
    return len(job_ids)


def csv_header(names: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(names)
    return buffer.getvalue().encode()
