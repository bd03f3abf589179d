"""Who looked at whose personal data: a row per customer page opened, export made or export downloaded.

Rows hold ids only (staff user, customer, the job or request it went through), so the log itself
carries no personal data and survives the customer's erasure as a pseudonymous trail. Bulk exports
write one row per exported customer with one set-based INSERT; a large export job writes it on a
second connection while the file is written, both reading one snapshot (`SelectionLogInSnapshot`).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from uuid import UUID

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from customers.models import AccessAction, AccessLog


def access_log_record(*, user, customer_id: UUID | str, action: str, reference: str = "") -> AccessLog:
    if action not in AccessAction.values:
        raise ValueError(f"unknown access action {action!r}")
    return AccessLog.objects.create(
        user_id=user.pk, customer_id=customer_id, action=action, reference=str(reference or "")[:64]
    )


def access_log_record_selection(
    *, user, selection_sql: str, params: list, action: str, reference: str = "", at: datetime | None = None
) -> int:
    """One row per customer id the SQL selects (e.g. a bulk export's selection), all stamped `at` (now by
    default); returns how many.

    The rows go in in customer-id order: access_customer_idx (customer, -at) then takes them page after
    page instead of at random, which on a million rows costs a fraction (sorting the ids is cheaper).
    """
    if action not in AccessAction.values:
        raise ValueError(f"unknown access action {action!r}")
    with connection.cursor() as cursor:
        insert = "INSERT INTO customers_accesslog (user_id, customer_id, action, reference, at)"
        source = f"({selection_sql}) AS s(id)" if selection_sql else "customers_customer AS s"  # "": everyone
        query = f"{insert} SELECT %s, s.id, %s, %s, %s FROM {source} ORDER BY s.id"  # noqa: S608 - our ORM's SQL
        cursor.execute(query, [user.pk, action, str(reference or "")[:64], at or timezone.now(), *params])
        return cursor.rowcount


def access_log_forget(*, action: str, reference: str, since: datetime, at: datetime | None = None) -> int:
    """Remove the rows of one bulk access that did not happen after all (an export job that failed after
    its log was committed): `action` through `reference` from `since` on, or only those stamped `at`.
    One DELETE (the BRIN index on `at` finds the recent rows); returns how many."""
    with connection.cursor() as cursor:
        query = "DELETE FROM customers_accesslog WHERE action = %s AND reference = %s AND at >= %s"
        params = [action, str(reference or "")[:64], since]
        if at is not None:
            query, params = f"{query} AND at = %s", [*params, at]
        cursor.execute(query, params)
        return cursor.rowcount


SORT_WORK_MEM = "64MB"  # a bulk log's ids (16 bytes each and the sort's overhead) sorted without spilling
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


class SelectionLogInSnapshot:
    """`access_log_record_selection` on a second database connection (a thread), in a snapshot exported
    by the caller's REPEATABLE READ transaction (`pg_export_snapshot()`): the log selects exactly the
    customers the caller reads, while the caller reads them.

    The rows are committed only by `commit()`, which the caller says once it knows the access happened;
    `close()` (always, in a `finally`) rolls back whatever was not committed, closes the thread's
    connection and waits for the thread. The caller's transaction must stay open until `start()` returns:
    PostgreSQL imports a snapshot only while the transaction that exported it is open.
    """

    def __init__(self, *, snapshot: str, user, selection_sql: str, params: list, action: str, reference: str, at):
        if not _SNAPSHOT_ID.match(snapshot or ""):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        self._snapshot = snapshot
        self._insert = {
            "user": user, "selection_sql": selection_sql, "params": params, "action": action,
            "reference": reference, "at": at,
        }
        self._imported = threading.Event()  # the snapshot is the thread's: the caller's may end
        self._written = threading.Event()  # the INSERT ended, or failed
        self._decided = threading.Event()  # commit() or close() spoke
        self._commit = False
        self._thread = threading.Thread(target=self._run, name="access-log-in-snapshot", daemon=True)
        self.rows: int | None = None
        self.committed = False
        self.error: BaseException | None = None

    def start(self) -> SelectionLogInSnapshot:
        self._thread.start()
        self._imported.wait()
        self._raise()
        return self

    def wait_written(self) -> int:
        """The rows inserted (not yet committed); raises what the thread raised."""
        self._written.wait()
        self._raise()
        return self.rows

    def commit(self) -> None:
        """Commit the rows (after wait_written); raises when they were not committed."""
        self._commit = True
        self._decided.set()
        self._thread.join()
        self._raise()
        if not self.committed:
            raise RuntimeError("the access log was not committed")

    def close(self) -> None:
        self._decided.set()  # without commit(): roll back
        if self._thread.is_alive():
            self._thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with transaction.atomic():  # this thread's own connection
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cursor.execute(f"SET TRANSACTION SNAPSHOT '{self._snapshot}'")  # checked above; no parameters
                    cursor.execute(f"SET LOCAL work_mem = '{SORT_WORK_MEM}'")  # a million ids sorted in memory
                    if not self._insert["selection_sql"]:
                        # Every customer: read the table in order (the caller's COPY reads it too, and
                        # synchronized scans share those reads) and sort the ids, rather than walk the
                        # primary key, which visits the table page by page wherever the visibility map
                        # is not up to date (on a million customers, seconds).
                        cursor.execute("SET LOCAL enable_indexonlyscan = off")
                self._imported.set()
                self.rows = access_log_record_selection(**self._insert)
                self._written.set()
                self._decided.wait()
                if not self._commit:
                    transaction.set_rollback(True)
            self.committed = self._commit
        except BaseException as error:  # handed to the caller's thread
            self.error = error
        finally:
            self._imported.set()
            self._written.set()
            connection.close()


def access_log_record_ids(*, user, customer_ids, action: str, reference: str = "") -> int:
    """One row per customer in `customer_ids`: a queryset selecting one column of customer ids (set-based,
    one INSERT ... SELECT) or an iterable of ids. Every export of customer data outside the customer
    export jobs (segment member lists, consent-record audits, ...) logs through this; returns how many."""
    if isinstance(customer_ids, QuerySet):
        if len(customer_ids.query.values_select or ()) + len(customer_ids.query.annotation_select) != 1:
            raise ValueError("customer_ids must select exactly one column (e.g. .values('customer_id'))")
        selection_sql, params = customer_ids.order_by().query.sql_with_params()
        return access_log_record_selection(
            user=user, selection_sql=selection_sql, params=list(params), action=action, reference=reference
        )
    if action not in AccessAction.values:
        raise ValueError(f"unknown access action {action!r}")
    now, reference = timezone.now(), str(reference or "")[:64]
    rows = [
        AccessLog(user_id=user.pk, customer_id=customer_id, action=action, reference=reference, at=now)
        for customer_id in dict.fromkeys(customer_ids)
    ]
    return len(AccessLog.objects.bulk_create(rows, batch_size=5_000))


def access_log_of(customer_id: UUID | str) -> QuerySet[AccessLog]:
    return AccessLog.objects.filter(customer_id=customer_id).order_by("-at", "-id")
