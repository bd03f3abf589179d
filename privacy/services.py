"""Data-subject requests: filing, their lifecycle, export, erasure, restriction and retention."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from importlib import import_module
from pathlib import Path
from uuid import UUID

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from customers import events
from customers import selectors as customer_selectors
from customers.actor import SCOPE_ADMIN, Actor
from customers.errors import Forbidden, InvalidStatusTransition, NotFound, ValidationFailed
from customers.history import stamp
from privacy import exports
from privacy.models import (
    EXPORT_KINDS,
    OPEN_STATUSES,
    DataSubjectRequest,
    ErasureLog,
    RequestKind,
    RequestStatus,
)

logger = logging.getLogger(__name__)

CUSTOMER_ERASED = "customer.erased.v1"
PRIVACY_REQUEST_FILED = "customer.privacy_request.filed.v1"
PRIVACY_REQUEST_STATUS_CHANGED = "customer.privacy_request.status_changed.v1"

# Apps whose services offer `export_customer_data` and `erase_customers_data`, in erasure order.
DATA_PROVIDERS = ("segments", "consent", "addresses", "customers")

ALLOWED_MOVES = {
    RequestStatus.RECEIVED: {
        RequestStatus.VERIFYING,
        RequestStatus.IN_PROGRESS,
        RequestStatus.ON_HOLD,
        RequestStatus.REJECTED,
    },
    RequestStatus.VERIFYING: {RequestStatus.IN_PROGRESS, RequestStatus.ON_HOLD, RequestStatus.REJECTED},
    RequestStatus.IN_PROGRESS: {RequestStatus.COMPLETED, RequestStatus.ON_HOLD, RequestStatus.REJECTED},
    RequestStatus.ON_HOLD: {RequestStatus.IN_PROGRESS, RequestStatus.REJECTED},
    RequestStatus.COMPLETED: set(),
    RequestStatus.REJECTED: set(),
}


class RequestNotFound(NotFound):
    code = "PRIVACY_REQUEST_NOT_FOUND"


class ExportNotFound(NotFound):
    code = "EXPORT_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("There is no export yet: file an access or portability request first.")


EXPORT_DOWNLOADED = "customer.data_export.downloaded.v1"


def providers():
    return [import_module(f"{app}.services") for app in DATA_PROVIDERS]


def due_date(received_at: datetime, extension_months: int = 0) -> datetime:
    """One month after receipt, same day next month (31 Jan → 28/29 Feb), plus any extension."""
    return received_at + relativedelta(months=1 + extension_months)


# ---------------------------------------------------------------- lifecycle


def _lock(request_id) -> DataSubjectRequest:
    try:
        return DataSubjectRequest.objects.select_for_update().get(pk=request_id)
    except (DataSubjectRequest.DoesNotExist, ValueError, ValidationFailed):
        raise RequestNotFound(f"No privacy request {request_id}.") from None


def _save(request: DataSubjectRequest, actor: Actor, reason: str) -> None:
    request.updated_at = timezone.now()
    if actor.kind == "staff":
        request.handled_by = actor.user
    stamp(request, actor, reason)
    request.save()


def _move(request: DataSubjectRequest, *, actor: Actor, to: str, reason: str = "") -> None:
    if to not in ALLOWED_MOVES[request.status]:
        raise InvalidStatusTransition(
            f"A {request.status} request cannot become {to}.", code="PRIVACY_REQUEST_TRANSITION_NOT_ALLOWED"
        )
    previous = request.status
    request.status = to
    if to in (RequestStatus.ON_HOLD, RequestStatus.REJECTED):
        request.status_reason = reason
    if to in (RequestStatus.COMPLETED, RequestStatus.REJECTED):
        request.completed_at = timezone.now()
    _save(request, actor, f"{previous} → {to}")
    events.record(
        event_type=PRIVACY_REQUEST_STATUS_CHANGED,
        subject=request.customer_id,
        data={"request_id": str(request.id), "kind": request.kind, "from_status": previous, "to_status": to},
        actor=actor,
    )


# ---------------------------------------------------------------- who may do what through a token

FILE = "file"  # any kind but erasure
FILE_ERASURE = "file_erasure"
LIST = "list"
READ = "read"
DOWNLOAD = "download"
LIFT_RESTRICTION = "lift_restriction"
# What a token without a `customer_id` claim may do with `customers:write` alone (the API checks the scope).
WRITE_SCOPE_ENOUGH = frozenset({FILE})


def privacy_authorize(*, actor: Actor, action: str) -> None:
    """The rules for tokens, checked by every use-case below (staff act under their admin permissions).

    - A customer's own token may do everything to its own customer (the selectors answer 404 for any
      other customer, so it never learns they exist).
    - Any other token (a storefront or service) may file access, portability, rectification, restriction
      and objection requests with `customers:write`.
    - Erasure, listing a customer's requests, reading a request, downloading the export and lifting a
      restriction need `customers:admin` unless the token is the customer's own.
    """
    if actor.kind != "token" or actor.customer_id is not None or action in WRITE_SCOPE_ENOUGH:
        return
    if not actor.has_scope(SCOPE_ADMIN):
        raise Forbidden(f"This privacy operation on another customer's data needs {SCOPE_ADMIN}.")


def privacy_request_file(
    *, actor: Actor, customer_id: UUID, kind: str, notes: str = ""
) -> tuple[DataSubjectRequest, bool]:
    """File a request, or return the open one of the same kind. Returns (request, created).

    The whole use-case is one transaction: filing, the automatic first steps (restriction, objection,
    moving an export to in_progress) and their events commit together; the export job is queued on commit.
    """
    if kind not in RequestKind.values:
        raise ValidationFailed(f"Unknown request kind {kind!r}.", errors={"kind": [f"Unknown kind {kind!r}."]})
    privacy_authorize(actor=actor, action=FILE_ERASURE if kind == RequestKind.ERASURE else FILE)
    customer = customer_selectors.customer_get(actor=actor, customer_id=customer_id)
    existing = DataSubjectRequest.objects.filter(customer=customer, kind=kind, status__in=OPEN_STATUSES).first()
    if existing:
        return existing, False
    now = timezone.now()
    request = DataSubjectRequest(
        customer=customer, kind=kind, received_at=now, due_at=due_date(now), filed_by=actor.label, notes=notes
    )
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: only the insert can meet the other filing
                _save(request, actor, "filed")
        except IntegrityError:  # filed twice at the same moment: the other one won
            return DataSubjectRequest.objects.get(customer=customer, kind=kind, status__in=OPEN_STATUSES), False
        events.record(
            event_type=PRIVACY_REQUEST_FILED,
            subject=customer.pk,
            data={"request_id": str(request.id), "kind": kind, "due_at": request.due_at.isoformat()},
            actor=actor,
        )
        _start_automatic_work(request, actor)
    return request, True


def _start_automatic_work(request: DataSubjectRequest, actor: Actor) -> None:
    """Exports start at once (the requester is authenticated); restriction and objection apply at once.

    Erasure waits for a compliance officer's approval; rectification is done by hand.
    """
    if request.kind in EXPORT_KINDS:
        _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
        from privacy import tasks

        transaction.on_commit(lambda: tasks.run_export.delay(str(request.id)))
    elif request.kind == RequestKind.RESTRICTION:
        from customers import services as customer_services

        customer_services.customer_set_processing_restriction(
            actor=actor, customer_id=request.customer_id, restricted=True, reason=f"privacy request {request.id}"
        )
        _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
        _move(request, actor=actor, to=RequestStatus.COMPLETED)
    elif request.kind == RequestKind.OBJECTION:
        from consent import services as consent_services

        consent_services.consent_object_to_marketing(
            actor=actor, customer_id=request.customer_id, reason=f"privacy request {request.id}"
        )
        _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
        _move(request, actor=actor, to=RequestStatus.COMPLETED)


@transaction.atomic
def privacy_request_transition(*, actor: Actor, request_id, to: str, reason: str = "") -> DataSubjectRequest:
    reason = (reason or "").strip()
    if to in (RequestStatus.ON_HOLD, RequestStatus.REJECTED) and not reason:
        raise ValidationFailed("Say why.", errors={"reason": ["Required when putting on hold or rejecting."]})
    request = _lock(request_id)
    _move(request, actor=actor, to=to, reason=reason)
    return request


@transaction.atomic
def privacy_request_extend(*, actor: Actor, request_id, months: int, reason: str) -> DataSubjectRequest:
    """Extend the deadline by up to two further months in all (Art. 12(3)), with the reason recorded."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("An extension needs a reason.", errors={"reason": ["This field is required."]})
    request = _lock(request_id)
    if not request.is_open:
        raise InvalidStatusTransition("Only open requests can be extended.", code="PRIVACY_REQUEST_CLOSED")
    total = request.extension_months + months
    if months < 1 or total > 2:
        raise ValidationFailed(
            "A request can be extended by at most two months in all.",
            code="EXTENSION_NOT_ALLOWED",
            errors={"months": [f"{2 - request.extension_months} month(s) of extension left."]},
        )
    request.extension_months = total
    request.extension_reason = "\n".join(filter(None, [request.extension_reason, reason]))
    request.due_at = due_date(request.received_at, total)
    _save(request, actor, f"extended by {months} month(s)")
    return request


def privacy_requests_of(*, actor: Actor, customer_id) -> list[DataSubjectRequest]:
    privacy_authorize(actor=actor, action=LIST)
    customer = customer_selectors.customer_get(actor=actor, customer_id=customer_id)
    return list(DataSubjectRequest.objects.filter(customer=customer).order_by("-received_at"))


def privacy_request_get(*, actor: Actor, request_id) -> DataSubjectRequest:
    """A request; a customer's own token sees only its customer's (404 for others)."""
    privacy_authorize(actor=actor, action=READ)
    request = DataSubjectRequest.objects.filter(pk=request_id).first()
    if request is None or (actor.customer_id is not None and str(actor.customer_id) != str(request.customer_id)):
        raise RequestNotFound(f"No privacy request {request_id}.")
    return request


@transaction.atomic
def privacy_request_complete_manually(*, actor: Actor, request_id) -> DataSubjectRequest:
    """For kinds staff handle by hand (rectification): mark the work done."""
    request = _lock(request_id)
    if request.kind in EXPORT_KINDS or request.kind == RequestKind.ERASURE:
        raise ValidationFailed("Exports and erasures complete through their jobs.", code="COMPLETED_BY_JOB")
    if request.status in (RequestStatus.RECEIVED, RequestStatus.VERIFYING, RequestStatus.ON_HOLD):
        _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
    _move(request, actor=actor, to=RequestStatus.COMPLETED)
    return request


def retention_policies() -> dict[str, str]:
    policy = settings.PRIVACY_RETENTION
    return {
        "inactive_customers": (
            f"anonymize customers with no order, login or activity for {policy['inactive_customer_years']} years"
        ),
        "deleted_addresses": f"purge addresses deleted more than {policy['deleted_address_days']} days ago",
        "expired_exports": f"remove data exports after {policy['export_days']} days",
        "old_activity": f"purge activity older than {policy['activity_months']} months",
    }


# ---------------------------------------------------------------- export


@transaction.atomic
def privacy_export_downloaded(*, actor: Actor, request: DataSubjectRequest) -> None:
    """Every download of a customer's data leaves a trace (who, which export), without the data itself."""
    events.record(
        event_type=EXPORT_DOWNLOADED,
        subject=request.customer_id,
        data={"request_id": str(request.id), "customer_id": str(request.customer_id)},
        actor=actor,
    )


@transaction.atomic
def privacy_export_start(*, actor: Actor, request_id) -> DataSubjectRequest:
    """Queue the export job (on commit); a completed export is regenerated (staff: "Start the export")."""
    request = _lock(request_id)
    if request.kind not in EXPORT_KINDS:
        raise ValidationFailed("Only access and portability requests produce an export.", code="NOT_AN_EXPORT")
    if request.status == RequestStatus.REJECTED:
        raise InvalidStatusTransition("A rejected request is not exported.", code="PRIVACY_REQUEST_CLOSED")
    if request.status == RequestStatus.COMPLETED:
        open_ones = DataSubjectRequest.objects.filter(
            customer_id=request.customer_id, kind=request.kind, status__in=OPEN_STATUSES
        )
        if open_ones.exclude(pk=request.pk).exists():
            raise InvalidStatusTransition(
                "Another export of this kind is open for the customer: regenerate that one.", code="EXPORT_ALREADY_OPEN"
            )
        # Regenerating: the only move out of completed, recorded like every other.
        previous = request.status
        request.status = RequestStatus.IN_PROGRESS
        request.completed_at = None
        _save(request, actor, "export regenerated")
        events.record(
            event_type=PRIVACY_REQUEST_STATUS_CHANGED,
            subject=request.customer_id,
            data={
                "request_id": str(request.id),
                "kind": request.kind,
                "from_status": previous,
                "to_status": RequestStatus.IN_PROGRESS,
            },
            actor=actor,
        )
    elif request.status != RequestStatus.IN_PROGRESS:
        _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
    from privacy import tasks

    transaction.on_commit(lambda: tasks.run_export.delay(str(request.id)))
    return request


def privacy_run_export(*, actor: Actor, request_id) -> DataSubjectRequest:
    """Write the customer's data document; idempotent (a completed request is left as it is).

    The file is written to a temporary name inside the transaction and put in place only once the
    transaction commits; if it rolls back, the temporary file is removed.
    """
    temporary: Path | None = None
    try:
        with transaction.atomic():
            request = _lock(request_id)
            if request.status == RequestStatus.COMPLETED:
                return request
            if request.kind not in EXPORT_KINDS:
                raise ValidationFailed("Only access and portability requests produce an export.", code="NOT_AN_EXPORT")
            if request.status != RequestStatus.IN_PROGRESS:
                _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
            document = exports.build_document(request)
            temporary, path = exports.write_temporary_file(request, document)
            request.result_file = str(path)
            request.result_expires_at = timezone.now() + timedelta(days=settings.PRIVACY_RETENTION["export_days"])
            _move(request, actor=actor, to=RequestStatus.COMPLETED)
            written = temporary
            transaction.on_commit(lambda: written.replace(path))
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    return request


def privacy_latest_export(*, actor: Actor, customer_id) -> tuple[DataSubjectRequest | None, dict | None]:
    """The newest export request and, when it is complete and still on disk, its document."""
    privacy_authorize(actor=actor, action=DOWNLOAD)
    customer = customer_selectors.customer_get(actor=actor, customer_id=customer_id)
    request = (
        DataSubjectRequest.objects.filter(customer=customer, kind__in=EXPORT_KINDS)
        .exclude(status=RequestStatus.REJECTED)
        .order_by("-received_at")
        .first()
    )
    if request is None or request.status != RequestStatus.COMPLETED or not request.result_file:
        return request, None
    path = Path(request.result_file)
    if not path.exists():
        return request, None
    return request, json.loads(path.read_text())


# ---------------------------------------------------------------- erasure


def erasure_hold_checks() -> list:
    """The configured hold checks (settings.PRIVACY_ERASURE_HOLD_CHECKS; see privacy.holds)."""
    return [import_string(dotted) for dotted in settings.PRIVACY_ERASURE_HOLD_CHECKS]


def erasure_hold_reason(customer_id) -> str | None:
    """Ask each configured hold check (e.g. open orders) whether the data must be kept for now."""
    for check in erasure_hold_checks():
        reason = check(customer_id)
        if reason:
            return reason
    return None


def exclude_held(customers):
    """The customers no hold check keeps, set-based where a check can (`exclude_held`), and the checks
    that must still be asked one customer at a time. Returns (queryset, per_customer_checks)."""
    per_customer = []
    for check in erasure_hold_checks():
        set_based = getattr(check, "exclude_held", None)
        if set_based is None:
            per_customer.append(check)
        else:
            customers = set_based(customers)
    return customers, per_customer


def with_merged_records(customer_ids: list) -> list:
    """The customers and, level by level, the records merged into them (the same person's older records,
    status `merged`, which keep their own names and phone): an erasure covers them all."""
    everyone = list(dict.fromkeys(customer_ids))
    seen = set(everyone)
    frontier = everyone
    while frontier:
        found = [
            pk
            for pk in customer_selectors.customers_visible_to(Actor.system("privacy"))
            .filter(merged_into_id__in=frontier)
            .values_list("pk", flat=True)
            if pk not in seen
        ]
        seen.update(found)
        everyone += found
        frontier = found
    return everyone


def erase_customers(
    *, actor: Actor, customer_ids: list, trigger: str, request: DataSubjectRequest | None = None
) -> dict:
    """Erase the customers' personal data in every app, log it and tell downstream systems. In a transaction.

    Records merged into them are erased with them (see with_merged_records) and counted as `merged_records`.
    """
    requested = list(customer_ids)
    customer_ids = with_merged_records(requested)
    counts: dict[str, int] = {}
    for provider in providers():
        for table, count in provider.erase_customers_data(customer_ids).items():
            counts[table] = counts.get(table, 0) + count
    counts.update(exports.erase_privacy_records(customer_ids))
    ErasureLog.objects.create(
        request=request,
        customer_id=requested[0] if len(requested) == 1 else None,
        trigger=trigger,
        performed_by=actor.label,
        counts={**counts, "customers": len(requested), "merged_records": len(customer_ids) - len(requested)},
    )
    events.record_many(
        event_type=CUSTOMER_ERASED,
        items=[(customer_id, {"customer_id": str(customer_id)}) for customer_id in customer_ids],
        actor=actor,
    )
    return counts


@transaction.atomic
def privacy_erasure_requested(
    *, actor: Actor, customer_id, source_event_id: str = "", reason: str = ""
) -> DataSubjectRequest:
    """Another system asked for the customer's erasure (customer.erasure_requested.v1): file the request.

    Idempotent: the open erasure request is returned when there is one. Like every erasure it waits for
    a compliance officer's approval; when a hold check (open orders) says the data must be kept, it is put
    on hold at once with that reason so the queue shows why it waits (approval re-checks the holds).
    """
    notes = f"Filed automatically: {reason or 'erasure requested'} (event {source_event_id})."
    request, created = privacy_request_file(
        actor=actor, customer_id=customer_id, kind=RequestKind.ERASURE, notes=notes
    )
    if created:
        hold = erasure_hold_reason(customer_id)
        if hold:
            _move(request, actor=actor, to=RequestStatus.ON_HOLD, reason=hold)
    return request


def privacy_approve_erasure(*, actor: Actor, request_id) -> DataSubjectRequest:
    """A compliance officer approves: the erasure job is queued."""
    with transaction.atomic():
        request = _lock(request_id)
        if request.kind != RequestKind.ERASURE:
            raise ValidationFailed("Only erasure requests can be approved for erasure.", code="NOT_AN_ERASURE")
        if request.status != RequestStatus.IN_PROGRESS:
            _move(request, actor=actor, to=RequestStatus.IN_PROGRESS)
        from privacy import tasks

        transaction.on_commit(lambda: tasks.run_erasure.delay(str(request.id), actor.label))
    return request


def privacy_run_erasure(*, actor: Actor, request_id) -> DataSubjectRequest:
    """Erase the request's customer; idempotent, and waits (on_hold) when something must be kept."""
    with transaction.atomic():
        request = _lock(request_id)
        if request.status in (RequestStatus.COMPLETED, RequestStatus.REJECTED):
            return request
        if request.kind != RequestKind.ERASURE:
            raise ValidationFailed("Not an erasure request.", code="NOT_AN_ERASURE")
        if request.status != RequestStatus.IN_PROGRESS:
            raise InvalidStatusTransition("Approve the erasure first.", code="ERASURE_NOT_APPROVED")
        hold = erasure_hold_reason(request.customer_id)
        if hold:
            _move(request, actor=actor, to=RequestStatus.ON_HOLD, reason=hold)
            return request
        erase_customers(actor=actor, customer_ids=[request.customer_id], trigger="erasure_request", request=request)
        _move(request, actor=actor, to=RequestStatus.COMPLETED)
    return request


@transaction.atomic
def privacy_lift_restriction(*, actor: Actor, customer_id, reason: str):
    """Lift a customer's processing restriction (Art. 18(3)), recorded with who and why.

    The customer's history records it; an open or completed restriction request of theirs records it too.
    """
    privacy_authorize(actor=actor, action=LIFT_RESTRICTION)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Say why the restriction is lifted.", errors={"reason": ["This field is required."]})
    from customers import services as customer_services

    customer = customer_selectors.customer_get(actor=actor, customer_id=customer_id)
    if not customer.processing_restricted:
        raise InvalidStatusTransition("The customer's processing is not restricted.", code="NOT_RESTRICTED")
    customer = customer_services.customer_set_processing_restriction(
        actor=actor, customer_id=customer.pk, restricted=False, reason=reason
    )
    latest = (
        DataSubjectRequest.objects.select_for_update()
        .filter(customer_id=customer.pk, kind=RequestKind.RESTRICTION)
        .exclude(status=RequestStatus.REJECTED)
        .order_by("-received_at")
        .first()
    )
    if latest is not None:
        latest.notes = "\n".join(filter(None, [latest.notes, f"Restriction lifted: {reason}"]))
        _save(latest, actor, f"restriction lifted: {reason}")
    return customer


def privacy_request_lift_restriction(*, actor: Actor, request_id, reason: str):
    """The admin's door: lift the restriction a restriction request applied."""
    request = DataSubjectRequest.objects.filter(pk=request_id).first()
    if request is None:
        raise RequestNotFound(f"No privacy request {request_id}.")
    if request.kind != RequestKind.RESTRICTION:
        raise ValidationFailed("Only restriction requests can be lifted.", code="NOT_A_RESTRICTION")
    return privacy_lift_restriction(actor=actor, customer_id=request.customer_id, reason=reason)


def report_overdue() -> int:
    overdue = DataSubjectRequest.objects.filter(status__in=OPEN_STATUSES, due_at__lt=timezone.now())
    count = overdue.count()
    if count:
        logger.warning("%d privacy request(s) overdue", count)
    return count
