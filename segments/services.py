"""Every write use-case of the segments app: definitions, static membership, calculations, tiers.

API, admin and tasks call these. Membership changes over many customers are set-based
(`segments.calculation`); changes for one customer use the ORM and `customers.events.record`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.expressions import RawSQL
from django.db.models.functions import Greatest, Lower
from django.utils import timezone

from customers import events
from customers import services as customer_services
from customers.actor import Actor
from customers.errors import CustomerNotFound, NotFound, ValidationFailed
from customers.history import stamp
from customers.precompiled import ArrayOf, PrecompiledQuery, as_uuids
from segments import calculation, selectors, tiers
from segments import events as segment_events
from segments.errors import (
    ConsentRequired,
    InvalidSegmentRules,
    SegmentAlreadyExists,
    SegmentBuiltin,
    SegmentCalculating,
    SegmentInactive,
    SegmentInUse,
    SegmentNotDynamic,
    SegmentNotFound,
    SegmentNotStatic,
    SegmentUpdateFailed,
)
from segments.models import (
    RESERVED_SEGMENT_CODES,
    SEGMENT_CODE_PATTERN,
    CalculationStatus,
    CalculationTrigger,
    CustomerTier,
    MembershipSource,
    Segment,
    SegmentCalculation,
    SegmentKind,
    SegmentMembership,
    SegmentStatus,
)
from segments.rules import parse_rules

logger = logging.getLogger(__name__)

DEFINITION_FIELDS = ("code", "name", "description", "kind", "status", "rules", "requires_consent")
MAX_BULK_MEMBERS = 10_000
DEFAULT_STALE_AFTER = timedelta(hours=1)
DEFAULT_STATEMENT_TIMEOUT_MS = 30 * 60 * 1000
_CODE = re.compile(SEGMENT_CODE_PATTERN)


# ---------------------------------------------------------------- locks


def _lock_key(kind: str, ident: object) -> str:
    return f"segments.{kind}:{ident}"


def _lock_segment_exclusive(segment_id: UUID) -> None:
    """Held by a full recalculation: per-customer evaluations of this segment wait for it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [_lock_key("segment", segment_id)])


def _locked_segment(segment_id: UUID | str) -> Segment:
    try:
        return Segment.objects.select_for_update().get(pk=segment_id)
    except (Segment.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise SegmentNotFound(segment_id) from None


# ---------------------------------------------------------------- definitions


def _check_cycles(parsed, code: str) -> None:
    references = parsed.codes("segments")
    if code in references:
        raise InvalidSegmentRules({references[code]: ["A segment cannot refer to itself."]})
    graph = selectors.dependency_graph()
    graph[code] = set(references)
    cycle = selectors.find_cycle(graph, code)
    if cycle:
        culprit = cycle[1]
        raise InvalidSegmentRules(
            {references.get(culprit, "rules"): [f"Segment {culprit!r} refers back to this one: {' → '.join(cycle)}."]}
        )


def segment_validate_rules(rules: Any, *, code: str | None = None, requires_consent: str = "") -> Any:
    """Shape, fields, operators, values, the codes they name and cycles through "in segment"."""
    parsed = parse_rules(rules)
    if code:
        _check_cycles(parsed, code)
    selectors.rules_context(parsed, requires_consent=requires_consent)
    return parsed


def _clean_definition(values: dict[str, Any], *, current: Segment | None) -> dict[str, Any]:
    unknown = set(values) - set(DEFINITION_FIELDS)
    if unknown:
        raise ValidationFailed(
            "Unknown fields.", errors={name: ["This field is not part of a segment."] for name in sorted(unknown)}
        )
    cleaned = dict(values)
    errors: dict[str, list[str]] = {}
    for name in ("code", "name", "description", "requires_consent"):
        if name in cleaned:
            cleaned[name] = (cleaned[name] or "").strip()
    if "code" in cleaned and (not _CODE.match(cleaned["code"]) or cleaned["code"] in RESERVED_SEGMENT_CODES):
        errors["code"] = ["2-50 lower-case letters, digits and underscores, starting with a letter."]
    if "name" in cleaned and not cleaned["name"]:
        errors["name"] = ["This field is required."]
    if "kind" in cleaned and cleaned["kind"] not in SegmentKind.values:
        errors["kind"] = [f"Must be one of: {', '.join(SegmentKind.values)}."]
    if "status" in cleaned and cleaned["status"] not in (SegmentStatus.ACTIVE, SegmentStatus.INACTIVE):
        errors["status"] = ["Set active or inactive; calculating and error are set by calculations."]
    if errors:
        raise ValidationFailed("Some fields are invalid.", errors=errors)

    kind = cleaned.get("kind", current.kind if current else None)
    if current is not None and kind != current.kind:
        raise ValidationFailed("The kind of a segment cannot change.", errors={"kind": ["Cannot change."]})
    rules = cleaned.get("rules", current.rules if current else None)
    if kind == SegmentKind.STATIC and rules is not None:
        raise ValidationFailed("A static segment has no rules.", errors={"rules": ["Only dynamic segments."]})
    if kind == SegmentKind.DYNAMIC and rules is None:
        raise ValidationFailed("A dynamic segment needs rules.", errors={"rules": ["This field is required."]})
    code = cleaned.get("code", current.code if current else None)
    requires_consent = cleaned.get("requires_consent", current.requires_consent if current else "")
    if kind == SegmentKind.DYNAMIC and ({"rules", "requires_consent", "code"} & set(cleaned) or current is None):
        segment_validate_rules(rules, code=code, requires_consent=requires_consent)
    elif requires_consent and "requires_consent" in cleaned:
        selectors.rules_context(None, requires_consent=requires_consent)
    return cleaned


def _check_unique(cleaned: dict, *, excluding: UUID | None) -> None:
    for name in ("code", "name"):
        if name in cleaned:
            taken = Segment.objects.filter(**{f"{name}__iexact" if name == "name" else name: cleaned[name]})
            if excluding is not None:
                taken = taken.exclude(pk=excluding)
            if taken.exists():
                raise SegmentAlreadyExists(
                    f"A segment with this {name} already exists.", errors={name: ["Already taken."]}
                )


def segment_validate(values: dict[str, Any], *, segment_id: UUID | str | None = None) -> dict[str, Any]:
    """The checks create and update apply, without writing: for forms that show errors per field."""
    current = selectors.segment_get(segment_id) if segment_id else None
    cleaned = _clean_definition(values, current=current)
    _check_unique(cleaned, excluding=current.pk if current else None)
    return cleaned


def _save(segment: Segment) -> None:
    try:
        with transaction.atomic():
            segment.save()
    except IntegrityError as error:
        if "code" in str(error) or "name" in str(error):
            raise SegmentAlreadyExists("A segment with this code or name already exists.") from None
        raise


@transaction.atomic
def segment_create(
    *,
    actor: Actor,
    code: str,
    name: str,
    kind: str = SegmentKind.STATIC,
    description: str = "",
    rules: Any = None,
    requires_consent: str = "",
    status: str = SegmentStatus.ACTIVE,
) -> Segment:
    """Define a segment; a dynamic one is calculated right away (202-style: a job is queued)."""
    values = {
        "code": code,
        "name": name,
        "kind": kind,
        "description": description,
        "rules": rules,
        "requires_consent": requires_consent,
        "status": status,
    }
    cleaned = _clean_definition(values, current=None)
    _check_unique(cleaned, excluding=None)
    now = timezone.now()
    segment = Segment(**cleaned, created_by=actor.label, created_at=now, updated_at=now)
    stamp(segment, actor, "created")
    _save(segment)
    if segment.is_dynamic and segment.status == SegmentStatus.ACTIVE:
        segment_request_calculation(actor=actor, segment_id=segment.pk, trigger=CalculationTrigger.RULES_CHANGED)
        segment.refresh_from_db()
    return segment


@transaction.atomic
def segment_update(*, actor: Actor, segment_id: UUID | str, changes: dict[str, Any]) -> Segment:
    """Change a definition. New rules (or consent requirement, or reactivation) queue a recalculation."""
    segment = _locked_segment(segment_id)
    cleaned = _clean_definition(changes, current=segment)
    changed = sorted(name for name, value in cleaned.items() if getattr(segment, name) != value)
    if not changed:
        return segment
    recalculating_fields = {"rules", "requires_consent", "status"} & set(changed)
    if recalculating_fields and segment.status == SegmentStatus.CALCULATING:
        raise SegmentCalculating(segment.code)
    if "code" in changed:
        if segment.is_builtin:
            raise SegmentBuiltin("The code of a built-in segment cannot change.", errors={"code": ["Cannot change."]})
        users = sorted(name for name, refs in selectors.dependency_graph().items() if segment.code in refs)
        if users:
            raise SegmentInUse(
                f"Segments {', '.join(users)} refer to this code in their rules.",
                errors={"code": [f"Used by: {', '.join(users)}."]},
            )
    _check_unique({name: cleaned[name] for name in changed if name in ("code", "name")}, excluding=segment.pk)
    for name in changed:
        setattr(segment, name, cleaned[name])
    if segment.status == SegmentStatus.ACTIVE and "status" in changed:
        segment.error = ""
    segment.updated_at = timezone.now()
    stamp(segment, actor, "updated: " + ", ".join(changed))
    _save(segment)
    if segment.kind == SegmentKind.STATIC and "requires_consent" in changed and segment.requires_consent:
        _drop_members_without_consent(segment, actor)
    if segment.is_dynamic and segment.status != SegmentStatus.INACTIVE and recalculating_fields:
        segment_request_calculation(actor=actor, segment_id=segment.pk, trigger=CalculationTrigger.RULES_CHANGED)
        segment.refresh_from_db()
    return segment


def _drop_members_without_consent(segment: Segment, actor: Actor) -> list:
    """A static segment now requires consent: close (one statement, a removed event each) the
    memberships of members who lack it, and count the members again."""
    from consent import selectors as consent_selectors

    consenting = consent_selectors.customers_consenting_to(segment.requires_consent).values("pk")
    sql, params = consenting.query.sql_with_params()
    try:
        left = calculation.close_memberships(
            segment=segment,
            customer_ids=None,
            keeping_query=(sql, list(params)),
            reason=segment_events.LEFT_CONSENT,
            now=timezone.now(),
            actor=actor,
        )
    except DatabaseError as error:
        logger.exception("dropping the members without consent of segment %s failed", segment.code)
        raise SegmentUpdateFailed(f"Members of segment {segment.code} could not be updated.") from error
    _refresh_member_count(segment)
    return left


@transaction.atomic
def segment_delete(*, actor: Actor, segment_id: UUID | str) -> None:
    """Delete a segment with its membership; current members get a removed event."""
    target = selectors.segment_get(segment_id)
    running = selectors.open_calculation(target.pk)
    if running is not None and running.status == CalculationStatus.RUNNING:
        raise SegmentCalculating(target.code)  # answer now rather than wait for the run to end
    _lock_segment_exclusive(target.pk)  # before the row: see _recalculate
    segment = _locked_segment(segment_id)
    if segment.is_builtin:
        raise SegmentBuiltin("Built-in segments cannot be deleted; deactivate them instead.")
    users = sorted(name for name, refs in selectors.dependency_graph().items() if segment.code in refs)
    users = [name for name in users if name != segment.code]
    if users:
        raise SegmentInUse(f"Segments {', '.join(users)} refer to this one in their rules.")
    calculation.close_memberships(
        segment=segment,
        customer_ids=None,
        reason=segment_events.LEFT_SEGMENT_DELETED,
        now=timezone.now(),
        actor=actor,
    )
    stamp(segment, actor, "deleted")
    segment.delete()


# ---------------------------------------------------------------- static membership


@dataclass
class MembershipChange:
    changed: list = field(default_factory=list)  # customer ids added / removed
    unchanged: list = field(default_factory=list)  # already members / not members
    removed: list = field(default_factory=list)  # a replacing import: members the file did not name
    not_found: list = field(default_factory=list)
    not_consenting: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "changed": [str(item) for item in self.changed],
            "unchanged": [str(item) for item in self.unchanged],
            "not_found": [str(item) for item in self.not_found],
            "not_consenting": [str(item) for item in self.not_consenting],
        }


def _unique_ids(customer_ids) -> tuple[list[UUID], list]:
    """The distinct valid ids in the order given (a dict: linear, not a list scanned per id), and the
    values that are no UUID."""
    valid: dict[UUID, None] = {}
    invalid = []
    for raw in customer_ids:
        try:
            value = raw if isinstance(raw, UUID) else UUID(str(raw))
        except (ValueError, TypeError, AttributeError):
            invalid.append(raw)
            continue
        valid[value] = None
    valid = list(valid)
    if len(valid) > MAX_BULK_MEMBERS:
        raise ValidationFailed(
            f"At most {MAX_BULK_MEMBERS} customers at once.",
            errors={"customer_ids": [f"At most {MAX_BULK_MEMBERS} customers at once."]},
        )
    return valid, invalid


def _static_segment_for_change(segment_id) -> Segment:
    segment = _locked_segment(segment_id)
    if segment.kind != SegmentKind.STATIC:
        raise SegmentNotStatic(segment.code)
    return segment


def _dependents_follow(segment: Segment, customer_ids) -> None:
    """Dynamic segments whose rules say "in segment <this one>" follow a change of its members by hand
    or import: after commit, the customers it changed are re-evaluated, as after any change of theirs."""
    if not customer_ids or not selectors.dependents(segment.code):
        return
    from segments.subscribers import queue_customer_evaluations

    changed = [str(customer_id) for customer_id in customer_ids]
    transaction.on_commit(lambda: queue_customer_evaluations(changed, cause=f"members of {segment.code}"))


def _refresh_member_count(segment: Segment) -> None:
    segment.member_count = selectors.current_memberships().filter(segment=segment).count()
    Segment.objects.filter(pk=segment.pk).update(member_count=segment.member_count, updated_at=timezone.now())


@transaction.atomic
def segment_members_add(
    *, actor: Actor, segment_id: UUID | str, customer_ids, source: str = MembershipSource.MANUAL
) -> MembershipChange:
    """Add customers to a static segment. Unknown or erased customers, and customers lacking the
    consent the segment requires, are reported back and not added."""
    if source not in (MembershipSource.MANUAL, MembershipSource.IMPORT):
        raise ValidationFailed("Members are added by hand or by import.", errors={"source": ["manual or import"]})
    segment = _static_segment_for_change(segment_id)
    wanted, invalid = _unique_ids(customer_ids)
    result = MembershipChange(not_found=list(invalid))
    eligible = set(selectors.eligible_customers().filter(pk__in=wanted).values_list("pk", flat=True))
    result.not_found += [item for item in wanted if item not in eligible]
    candidates = [item for item in wanted if item in eligible]
    if segment.requires_consent and candidates:
        from consent import selectors as consent_selectors

        consenting = set(
            consent_selectors.customers_consenting_to(segment.requires_consent)
            .filter(pk__in=candidates)
            .values_list("pk", flat=True)
        )
        result.not_consenting = [item for item in candidates if item not in consenting]
        candidates = [item for item in candidates if item in consenting]
    try:
        joined = calculation.open_memberships(
            segment=segment, customer_ids=candidates, source=source, now=timezone.now(), actor=actor
        )
    except DatabaseError as error:
        logger.exception("adding members to segment %s failed", segment.code)
        raise SegmentUpdateFailed(f"Members could not be added to segment {segment.code}.") from error
    joined_set = set(joined)
    result.changed = [item for item in candidates if item in joined_set]
    result.unchanged = [item for item in candidates if item not in joined_set]
    if joined:
        _refresh_member_count(segment)
        _dependents_follow(segment, joined)
    return result


@transaction.atomic
def segment_members_remove(*, actor: Actor, segment_id: UUID | str, customer_ids) -> MembershipChange:
    """Remove customers from a static segment (their membership row is closed, not deleted)."""
    segment = _static_segment_for_change(segment_id)
    wanted, invalid = _unique_ids(customer_ids)
    try:
        left = calculation.close_memberships(
            segment=segment, customer_ids=wanted, reason=segment_events.LEFT_MANUAL, now=timezone.now(), actor=actor
        )
    except DatabaseError as error:
        logger.exception("removing members from segment %s failed", segment.code)
        raise SegmentUpdateFailed(f"Members could not be removed from segment {segment.code}.") from error
    left_set = set(left)
    result = MembershipChange(changed=[item for item in wanted if item in left_set], not_found=list(invalid))
    result.unchanged = [item for item in wanted if item not in left_set]
    if left:
        _refresh_member_count(segment)
        _dependents_follow(segment, left)
    return result


def _open_membership(customer_id: UUID, segment: Segment) -> SegmentMembership | None:
    return selectors.current_memberships().filter(customer_id=customer_id, segment=segment).first()


@transaction.atomic
def customer_segment_assign(
    *, actor: Actor, customer_id: UUID, segment_id: UUID | str
) -> tuple[SegmentMembership, bool]:
    """Put one customer in a static segment; (membership, created). Idempotent for a member."""
    result = segment_members_add(actor=actor, segment_id=segment_id, customer_ids=[customer_id])
    if result.not_found:
        raise CustomerNotFound(customer_id)
    if result.not_consenting:
        segment = selectors.segment_get(segment_id)
        raise ConsentRequired(
            f"Segment {segment.code} requires consent to {segment.requires_consent!r}; the customer has not given it."
        )
    segment = selectors.segment_get(segment_id)
    return _open_membership(customer_id, segment), bool(result.changed)


@transaction.atomic
def customer_segment_remove(*, actor: Actor, customer_id: UUID, segment_id: UUID | str) -> None:
    result = segment_members_remove(actor=actor, segment_id=segment_id, customer_ids=[customer_id])
    if not result.changed:
        raise NotFound("The customer is not a member of this segment.", code="SEGMENT_MEMBERSHIP_NOT_FOUND")


IDENTIFIER_COLUMNS = ("customer_id", "id", "customer_number", "email")


@transaction.atomic
def segment_members_import(
    *, actor: Actor, segment_id: UUID | str, rows: list[dict[str, str]], replace: bool = False
) -> MembershipChange:
    """Add the customers a CSV names (by `customer_id`, `customer_number` or `email`) to a static segment.

    With `replace`, members the file does not name are removed. Rows naming nobody are reported.
    """
    segment = _static_segment_for_change(segment_id)
    if len(rows) > MAX_BULK_MEMBERS:
        raise ValidationFailed(f"At most {MAX_BULK_MEMBERS} rows.", errors={"file": [f"At most {MAX_BULK_MEMBERS}."]})
    ids, numbers, emails, unreadable = [], [], [], []
    for row in rows:
        row = {str(key or "").strip().lower(): (value or "").strip() for key, value in row.items()}
        if row.get("customer_id") or row.get("id"):
            ids.append(row.get("customer_id") or row.get("id"))
        elif row.get("customer_number"):
            numbers.append(row["customer_number"].upper())
        elif row.get("email"):
            emails.append(row["email"].lower())
        else:
            unreadable.append(", ".join(f"{key}={value}" for key, value in row.items())[:100])
    found = selectors.eligible_customers()
    by_number = dict(found.filter(customer_number__in=numbers).values_list("customer_number", "pk"))
    by_email = dict(
        found.annotate(email_lower=Lower("email")).filter(email_lower__in=emails).values_list("email_lower", "pk")
    )
    resolved = {str(pk) for pk in [*by_number.values(), *by_email.values()]}
    known_numbers, known_emails = set(by_number), set(by_email)
    missing = [item for item in numbers if item not in known_numbers] + [
        item for item in emails if item not in known_emails
    ]
    result = segment_members_add(
        actor=actor, segment_id=segment.pk, customer_ids=ids + sorted(resolved), source=MembershipSource.IMPORT
    )
    result.not_found += missing + unreadable
    if replace:
        # One statement closes every membership the file does not name (with a removed event each),
        # however many there are: the members are never loaded into Python.
        try:
            result.removed = calculation.close_memberships(
                segment=segment,
                customer_ids=None,
                keeping=[*result.changed, *result.unchanged],
                reason=segment_events.LEFT_MANUAL,
                now=timezone.now(),
                actor=actor,
            )
        except DatabaseError as error:
            logger.exception("replacing the members of segment %s failed", segment.code)
            raise SegmentUpdateFailed(f"Members of segment {segment.code} could not be replaced.") from error
        if result.removed:
            _refresh_member_count(segment)
            _dependents_follow(segment, result.removed)
    return result


# ---------------------------------------------------------------- full recalculation


def _stale_after() -> timedelta:
    return getattr(settings, "SEGMENTS_CALCULATION_STALE_AFTER", DEFAULT_STALE_AFTER)


@transaction.atomic
def segment_request_calculation(
    *, actor: Actor, segment_id: UUID | str, trigger: str = CalculationTrigger.REQUEST, run: bool = True
) -> SegmentCalculation:
    """Queue a full recalculation; while one is queued or running, that one is returned instead.

    A calculation unfinished after `SEGMENTS_CALCULATION_STALE_AFTER` (a worker died) is given up
    and a new one starts. With `run`, the task is queued once this transaction commits.
    """
    segment = _locked_segment(segment_id)
    if not segment.is_dynamic:
        raise SegmentNotDynamic(segment.code)
    if segment.status == SegmentStatus.INACTIVE:
        raise SegmentInactive(segment.code)
    now = timezone.now()
    current = selectors.open_calculation(segment.pk)
    if current is not None:
        if now - (current.started_at or current.requested_at) < _stale_after():
            return current
        SegmentCalculation.objects.filter(pk=current.pk).update(
            status=CalculationStatus.FAILED, finished_at=now, error="Abandoned: no progress (worker lost?)."
        )
    job = SegmentCalculation.objects.create(
        segment=segment, trigger=trigger, requested_by=actor.label, requested_at=now
    )
    _record_status(segment.pk, actor=actor, status=SegmentStatus.CALCULATING, reason=f"calculation {job.pk} queued")
    if run:
        transaction.on_commit(lambda: _queue_run(job.pk, actor))
    return job


def _record_status(segment_id, *, actor: Actor, status: str, reason: str, error: str = "", only_from=None, **values):
    """Set the segment's status (and error, and `values`) through `.save()`, so simple-history keeps a
    row of it naming the actor and why: calculating, active and error are a segment's story too."""
    segment = Segment.objects.select_for_update().filter(pk=segment_id).first()
    if segment is None or (only_from is not None and segment.status not in only_from):
        return None
    changes = {"status": status, "error": error, **values}
    for name, value in changes.items():
        setattr(segment, name, value)
    stamp(segment, actor, reason)
    segment.save(update_fields=list(changes))
    return segment


def _queue_run(job_id: UUID, actor: Actor) -> None:
    """After commit: hand the job to a worker. When that fails (broker down), the job fails at once and
    the segment shows the error, instead of both waiting an hour to be found stale."""
    from segments import tasks

    try:
        tasks.recalculate_segment.delay(str(job_id))
    except Exception as error:  # the request is committed: report on the job, not to the caller
        logger.exception("could not queue calculation %s", job_id)
        job = SegmentCalculation.objects.filter(pk=job_id, status=CalculationStatus.QUEUED).first()
        if job is not None:
            reason = f"The calculation could not be queued ({error.__class__.__name__}: {error}); request it again."
            _fail(job, SegmentUpdateFailed(reason), actor=actor)


def _claim(job_id: UUID | str) -> SegmentCalculation | None:
    """Mark the job running (its own short transaction, so staff see it); None when there is nothing to do."""
    with transaction.atomic():
        job = SegmentCalculation.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != CalculationStatus.QUEUED:
            return None  # done, or running elsewhere (a lost worker's job goes stale, see the request)
        job.status = CalculationStatus.RUNNING
        job.started_at = timezone.now()
        job.save(update_fields=["status", "started_at"])
        return job


def _statement_timeout_ms() -> int:
    return int(getattr(settings, "SEGMENTS_CALCULATION_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS))


def _recalculate(job: SegmentCalculation, actor: Actor) -> SegmentCalculation:
    with transaction.atomic():
        # Only the advisory lock is held for the run (per-customer evaluations of this segment wait
        # for it). The segment row is read, not locked: a second request must see the running job
        # (committed by `_claim`) at once instead of queueing behind the run, and an edit of the
        # name or description must not wait for it either. The rules cannot change meanwhile:
        # `segment_update` refuses rule changes of a calculating segment.
        _lock_segment_exclusive(job.segment_id)
        segment = selectors.segment_get(job.segment_id)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(_statement_timeout_ms())])
        calculation.tune_transaction()
        now = timezone.now()
        members = selectors.matching_customers(segment.rules, requires_consent=segment.requires_consent, now=now)
        members_sql, members_params = members.values("id", score=F("segment_score")).query.sql_with_params()
        diff = calculation.apply_full_recalculation(
            segment=segment, members_sql=members_sql, members_params=list(members_params), now=now, actor=actor
        )
        finished = timezone.now()
        SegmentCalculation.objects.filter(pk=job.pk).update(
            status=CalculationStatus.SUCCEEDED,
            finished_at=finished,
            joined=diff.joined,
            left=diff.left,
            rescored=diff.rescored,
            member_count=diff.member_count,
        )
        _record_status(
            segment.pk,
            actor=actor,
            status=SegmentStatus.ACTIVE,
            reason=f"calculation {job.pk}: {diff.joined} joined, {diff.left} left",
            member_count=diff.member_count,
            last_calculated_at=now,
        )
        job.refresh_from_db()
        events.record(
            event_type=segment_events.SEGMENT_RECALCULATED,
            subject=segment.pk,
            data=segment_events.recalculated_payload(
                segment=segment,
                job=job,
                joined=diff.joined,
                left=diff.left,
                rescored=diff.rescored,
                member_count=diff.member_count,
            ),
            actor=actor,
        )
    if diff.joined or diff.left:
        for dependent in selectors.dependents(segment.code):
            try:
                segment_request_calculation(actor=actor, segment_id=dependent.pk, trigger=CalculationTrigger.DEPENDENCY)
            except (SegmentInactive, SegmentNotDynamic):
                continue
    return job


def _fail(job: SegmentCalculation, error: Exception, *, actor: Actor) -> SegmentCalculation:
    message = getattr(error, "message", None) or str(error) or error.__class__.__name__
    message = message.strip()[:2000]
    with transaction.atomic():
        SegmentCalculation.objects.filter(
            pk=job.pk, status__in=[CalculationStatus.QUEUED, CalculationStatus.RUNNING]
        ).update(status=CalculationStatus.FAILED, finished_at=timezone.now(), error=message)
        _record_status(
            job.segment_id,
            actor=actor,
            status=SegmentStatus.ERROR,
            error=message,
            reason=f"calculation {job.pk} failed",
            only_from=(SegmentStatus.CALCULATING,),
        )
    job.refresh_from_db()
    return job


def segment_calculation_run(*, job_id: UUID | str, actor: Actor | None = None) -> SegmentCalculation | None:
    """Run a queued calculation: all or nothing. A failure marks the segment `error` with the reason
    and leaves its membership as it was. Idempotent: a finished job is not run again."""
    actor = actor or Actor.system("segments")
    job = _claim(job_id)
    if job is None:
        return None
    try:
        return _recalculate(job, actor)
    except Exception as error:
        logger.exception("calculation %s of segment %s failed", job.pk, job.segment_id)
        return _fail(job, error, actor=actor)


def segments_recalculate_all(*, actor: Actor) -> list[SegmentCalculation]:
    """The nightly run: every live dynamic segment, in dependency order, one after the other; then tiers."""
    graph = selectors.dependency_graph()
    live = {segment.code: segment for segment in selectors.live_dynamic_segments()}
    done = []
    for level in selectors.evaluation_levels(graph, live):
        for code in level:
            try:
                job = segment_request_calculation(
                    actor=actor, segment_id=live[code].pk, trigger=CalculationTrigger.SCHEDULE, run=False
                )
            except (SegmentNotFound, SegmentInactive, SegmentNotDynamic):
                continue
            if job.status != CalculationStatus.QUEUED:
                continue  # running elsewhere
            finished = segment_calculation_run(job_id=job.pk, actor=actor)
            if finished is not None:
                done.append(finished)
    tiers_recalculate(actor=actor)
    return done


# ---------------------------------------------------------------- one customer: incremental evaluation


@dataclass
class Evaluation:
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    rescored: list[str] = field(default_factory=list)
    tier_changed: bool = False


def _join(customer_id, segment: Segment, score, source: str, now, actor) -> bool:
    """Open a membership unless one is open (a concurrent evaluation got there first): joined?"""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO segments_segmentmembership
                (customer_id, segment_id, joined_at, left_at, score, source, added_by)
            VALUES (%s, %s, %s, NULL, %s, %s, '')
            ON CONFLICT (segment_id, customer_id) WHERE left_at IS NULL DO NOTHING
            """,
            [customer_id, segment.pk, now, score, source],
        )
        if cursor.rowcount == 0:
            return False
    Segment.objects.filter(pk=segment.pk).update(member_count=F("member_count") + 1)
    events.record(
        event_type=segment_events.SEGMENT_ASSIGNED,
        subject=customer_id,
        data=segment_events.assigned_payload(
            customer_id=customer_id,
            segment_id=segment.pk,
            segment_code=segment.code,
            source=source,
            score=score,
            joined_at=now,
        ),
        actor=actor,
    )
    return True


def _leave(membership: SegmentMembership, segment: Segment, reason: str, now, actor) -> bool:
    """Close the membership unless it is closed already (a concurrent evaluation): left?"""
    if not SegmentMembership.objects.filter(pk=membership.pk, left_at__isnull=True).update(left_at=now):
        return False
    Segment.objects.filter(pk=segment.pk, member_count__gt=0).update(member_count=F("member_count") - 1)
    events.record(
        event_type=segment_events.SEGMENT_REMOVED,
        subject=membership.customer_id,
        data=segment_events.removed_payload(
            customer_id=membership.customer_id,
            segment_id=segment.pk,
            segment_code=segment.code,
            source=membership.source,
            reason=reason,
            left_at=now,
        ),
        actor=actor,
    )
    return True


METRIC_COLUMNS = tiers.CRITERIA


# The evaluation query of a set of segment definitions, compiled once and reused for every customer
# for a few seconds (its relative dates move by at most that much): compiling it costs more than
# running it.
EVALUATION_QUERY_REUSE_SECONDS = 10
_evaluation_queries: dict = {}


def _evaluation_query(level: list[Segment], now, resolver, *, many: bool = False) -> tuple[PrecompiledQuery, list]:
    """(the query, [(index, segment)]) for `level`: `customer_id=` one customer's row, or with `many`
    `customer_ids=` a batch's rows (one each, with its `id`; the correlated rules still probe each
    customer's rows by index)."""
    bucket = int(now.timestamp()) // EVALUATION_QUERY_REUSE_SECONDS
    key = (bucket, many, tuple((segment.pk, segment.updated_at, segment.status) for segment in level))
    cached = _evaluation_queries.get(key)
    if cached is not None:
        return cached
    annotations, compiled = {}, []
    for index, segment in enumerate(level):
        try:
            condition, score = selectors.membership_condition(
                parse_rules(segment.rules),
                requires_consent=segment.requires_consent,
                now=now,
                resolver=resolver,
                correlated=True,
            )
        except InvalidSegmentRules as error:
            logger.warning("segment %s has rules that no longer compile: %s", segment.code, error.message)
            continue
        annotations[f"member_{index}"] = condition
        annotations[f"score_{index}"] = score
        compiled.append((index, segment))

    def of_one(customer_id):
        customers = selectors.eligible_customers().filter(pk=customer_id)
        return customers.annotate(**annotations).values(*METRIC_COLUMNS, *annotations)

    def of_many(customer_ids):
        customers = selectors.eligible_customers().filter(pk__in=RawSQL("SELECT unnest(%s::uuid[])", (customer_ids,)))
        return customers.annotate(**annotations).values("id", *METRIC_COLUMNS, *annotations)

    # Not prepared: PostgreSQL's generic plan of these is worse than the one it makes for the values
    # (a batch of 500 customers: 275-410 ms against 64-93 ms).
    if many:
        query = PrecompiledQuery(of_many, prepared=False, customer_ids=ArrayOf(str))
    else:
        query = PrecompiledQuery(of_one, prepared=False, customer_id=UUID)
    if len(_evaluation_queries) > 256:
        _evaluation_queries.clear()
    _evaluation_queries[key] = (query, compiled)
    return _evaluation_queries[key]


def _evaluate_level(customer_id, level: list[Segment], now, resolver) -> tuple[dict[UUID, tuple[bool, Any]], dict]:
    """Whether the customer belongs to each segment of `level` (and the score), and their metrics:
    one query. No row (erased, restricted, gone): a member of nothing."""
    query, compiled = _evaluation_query(level, now, resolver)
    (customer_uuid,) = as_uuids([customer_id])
    found = query.dicts(customer_id=customer_uuid)
    row = found[0] if found else None
    verdicts = {
        segment.pk: (bool(row and row[f"member_{index}"]), row[f"score_{index}"] if row else None)
        for index, segment in compiled
    }
    return verdicts, ({name: row[name] for name in METRIC_COLUMNS} if row else {})


def _evaluate_level_of_many(customer_ids: list[str], level: list[Segment], now, resolver) -> dict:
    """For each segment of `level`: its members among the customers, as [(customer id, score)] (an
    ineligible customer is a member of nothing). One query."""
    query, compiled = _evaluation_query(level, now, resolver, many=True)
    rows = query.dicts(customer_ids=customer_ids)
    return {
        segment.pk: [(row["id"], row[f"score_{index}"]) for row in rows if row[f"member_{index}"]]
        for index, segment in compiled
    }


def _live_segments_locked() -> list[Segment]:
    """The live dynamic segments, each share-locked (a full recalculation of one holds it exclusively,
    so the evaluation waits for it and then sees its result): one query."""
    lock = RawSQL("pg_advisory_xact_lock_shared(hashtextextended('segments.segment:' || segments_segment.id, 0))", [])
    return list(selectors.live_dynamic_segments().annotate(locked=lock).order_by("id"))


@transaction.atomic
def customer_segments_evaluate(*, actor: Actor, customer_id: UUID | str) -> Evaluation:
    """Re-evaluate one customer against every live dynamic segment (one query per dependency level,
    usually one) and apply joins and leaves with their events; drop them from static segments whose
    required consent they no longer hold; refresh their tier.

    Safe to run twice at once for the same customer: a join or leave the other run made already is
    not made (nor announced) again.
    """
    live = _live_segments_locked()
    by_code = {segment.code: segment for segment in live}
    graph = {segment.code: selectors.referenced_segment_codes(segment.rules) for segment in live}
    memberships = {m.segment_id: m for m in selectors.current_memberships().filter(customer_id=customer_id)}
    resolver = selectors.Resolver()
    now = timezone.now()
    result = Evaluation()
    metrics: dict = {}
    for level in selectors.evaluation_levels(graph, by_code) or [[]]:
        segments_of_level = [by_code[code] for code in level]
        verdicts, metrics = _evaluate_level(customer_id, segments_of_level, now, resolver)
        for segment in segments_of_level:
            if segment.pk not in verdicts:
                continue
            is_member, score = verdicts[segment.pk]
            current = memberships.get(segment.pk)
            if is_member and current is None:
                if _join(customer_id, segment, score, MembershipSource.RULE, now, actor):
                    result.joined.append(segment.code)
            elif not is_member and current is not None:
                if _leave(current, segment, segment_events.LEFT_RULES, now, actor):
                    result.left.append(segment.code)
            elif is_member and current.score != score:
                SegmentMembership.objects.filter(pk=current.pk).update(score=score)
                result.rescored.append(segment.code)
    live_ids = {segment.pk for segment in live}
    others = {segment_id: m for segment_id, m in memberships.items() if segment_id not in live_ids}
    if others:
        result.left += _drop_static_without_consent(customer_id, others, now, actor, eligible=bool(metrics))
    if metrics:
        result.tier_changed = _refresh_tier(actor=actor, customer_id=customer_id, metrics=metrics, now=now)
    return result


@dataclass
class BatchEvaluation:
    joined: dict[str, int] = field(default_factory=dict)  # segment code -> customers who joined
    left: dict[str, int] = field(default_factory=dict)
    tier_changed: int = 0


@transaction.atomic
def customers_segments_evaluate(*, actor: Actor, customer_ids: list) -> BatchEvaluation:
    """`customer_segments_evaluate` for a batch of customers (what one batch of event ingestion
    changed), set-based: per dependency level one query tells every customer's verdict for every
    live dynamic segment, then one statement per segment applies the joins and leaves among these
    customers with their events (the full recalculation's, limited to them); static segments drop
    those no longer consenting; tiers are refreshed in one statement. Hundreds of customers cost a
    few statements, not a transaction each.

    Safe beside other evaluations of the same customers: a membership another one opened or closed
    meanwhile is not opened, closed or announced again.
    """
    from consent import selectors as consent_selectors

    ids = [str(item) for item in dict.fromkeys(UUID(str(item)) for item in customer_ids)]
    result = BatchEvaluation()
    if not ids:
        return result
    live = _live_segments_locked()
    by_code = {segment.code: segment for segment in live}
    graph = {segment.code: selectors.referenced_segment_codes(segment.rules) for segment in live}
    resolver = selectors.Resolver()
    now = timezone.now()
    current: dict[UUID, set] = defaultdict(set)
    for membership in selectors.current_memberships().filter(customer_id__in=ids).values_list(
        "segment_id", "customer_id", "score"
    ):
        current[membership[0]].add(membership[1:])
    for level in selectors.evaluation_levels(graph, by_code):
        segments_of_level = [by_code[code] for code in level]
        members = _evaluate_level_of_many(ids, segments_of_level, now, resolver)
        for segment in segments_of_level:
            if segment.pk not in members:
                continue  # its rules no longer compile (logged): its membership stays as it is
            chosen = members[segment.pk]
            if set(chosen) == current[segment.pk]:
                continue  # nothing to change (as of this transaction's view; the statement re-checks)
            diff = calculation.apply_full_recalculation(
                segment=segment,
                members_sql="SELECT unnest(%s::uuid[]) AS id, unnest(%s::numeric[]) AS score",
                members_params=[[str(item) for item, _ in chosen], [score for _, score in chosen]],
                now=now,
                actor=actor,
                among=ids,
            )
            if diff.joined or diff.left:
                Segment.objects.filter(pk=segment.pk).update(
                    member_count=Greatest(F("member_count") + diff.joined - diff.left, 0)
                )
            for counts, count in ((result.joined, diff.joined), (result.left, diff.left)):
                if count:
                    counts[segment.code] = count
    for segment in _static_segments_requiring_consent_of(ids):
        consenting = (
            selectors.eligible_customers()
            .filter(pk__in=ids)
            .filter(pk__in=consent_selectors.customers_consenting_to(segment.requires_consent).values("pk"))
        )
        left = calculation.close_memberships(
            segment=segment,
            customer_ids=ids,
            reason=segment_events.LEFT_CONSENT,
            now=now,
            actor=actor,
            keeping_query=consenting.values("pk").query.sql_with_params(),
        )
        if left:
            Segment.objects.filter(pk=segment.pk).update(member_count=Greatest(F("member_count") - len(left), 0))
            result.left[segment.code] = result.left.get(segment.code, 0) + len(left)
    result.tier_changed = tiers_recalculate(actor=actor, customer_ids=ids)
    return result


def _static_segments_requiring_consent_of(customer_ids: list[str]) -> list[Segment]:
    """The static segments with a consent requirement that hold one of these customers."""
    held = selectors.current_memberships().filter(customer_id__in=customer_ids).values("segment_id")
    return list(Segment.objects.filter(kind=SegmentKind.STATIC, pk__in=held).exclude(requires_consent=""))


def _drop_static_without_consent(customer_id, memberships: dict, now, actor, *, eligible: bool) -> list[str]:
    needing = list(
        Segment.objects.filter(pk__in=list(memberships), kind=SegmentKind.STATIC).exclude(requires_consent="")
    )
    if not needing:
        return []
    from consent import selectors as consent_selectors

    left = []
    for segment in needing:
        consenting = eligible and consent_selectors.customer_consents_to(
            customer_id=customer_id, purpose=segment.requires_consent
        )
        if not consenting and _leave(memberships[segment.pk], segment, segment_events.LEFT_CONSENT, now, actor):
            left.append(segment.code)
    return left


@transaction.atomic
def customer_segments_erase(*, actor: Actor, customer_id: UUID | str) -> int:
    """For erasure: end every membership (with removed events), then delete the rows and the tier."""
    memberships = list(selectors.current_memberships().filter(customer_id=customer_id).select_related("segment"))
    now = timezone.now()
    for membership in memberships:
        _leave(membership, membership.segment, segment_events.LEFT_ERASED, now, actor)
    deleted, _ = SegmentMembership.objects.filter(customer_id=customer_id).delete()
    CustomerTier.objects.filter(customer_id=customer_id).delete()
    return deleted


# ---------------------------------------------------------------- tiers


@transaction.atomic
def customer_tier_refresh(*, actor: Actor, customer_id: UUID | str) -> bool:
    """Recompute the customer's tier from their metrics; True when the tier changed (event recorded)."""
    metrics = selectors.eligible_customers().filter(pk=customer_id).values(*METRIC_COLUMNS).first()
    if metrics is None:
        return False
    return _refresh_tier(actor=actor, customer_id=customer_id, metrics=metrics, now=timezone.now())


def _refresh_tier(*, actor: Actor, customer_id, metrics: dict, now) -> bool:
    """Inside the caller's transaction: store the tier of these metrics; True when it changed."""
    table = tiers.thresholds()
    new_tier = tiers.tier_of(metrics, table)
    held = tiers.qualifications(metrics, table)
    stored = CustomerTier.objects.select_for_update().filter(customer_id=customer_id).first()
    if stored is None:
        with connection.cursor() as cursor:  # a concurrent first evaluation may have created it
            cursor.execute(
                """
                INSERT INTO segments_customertier (customer_id, tier, reached_at, qualifications, evaluated_at)
                VALUES (%s, %s, %s, %s, %s) ON CONFLICT (customer_id) DO NOTHING
                """,
                [customer_id, new_tier, now, json.dumps(held), now],
            )
            if cursor.rowcount == 0:
                return False
        previous = None
    else:
        previous = stored.tier
        if stored.tier == new_tier and stored.qualifications == held:
            return False
        stored.qualifications = held
        stored.evaluated_at = now
        if stored.tier != new_tier:
            stored.tier, stored.reached_at = new_tier, now
        stored.save()
    changed = (previous or "regular") != new_tier
    if changed:
        events.record(
            event_type=segment_events.TIER_CHANGED,
            subject=customer_id,
            data=segment_events.tier_changed_payload(
                customer_id=customer_id, from_tier=previous, to_tier=new_tier, reached_at=now, qualifications=held
            ),
            actor=actor,
        )
    if previous != new_tier:
        customer_services.customer_representation_changed(customer_id=customer_id)
    return changed


@transaction.atomic
def tiers_recalculate(*, actor: Actor, customer_ids: list | None = None) -> int:
    """Every eligible customer's tier (or these customers' only) in one statement (thresholds
    changed, nightly catch-up, a batch of evaluations); returns how many changed tier. Events for
    each change go to the outbox set-based."""
    tier_sql, tier_params = tiers.tier_case_sql("c")
    quals_sql, quals_params = tiers.qualifications_sql("c")
    eligible = selectors.eligible_customers()
    if customer_ids is not None:
        eligible = eligible.filter(pk__in=customer_ids)
    eligible_sql, eligible_params = eligible.values("id", *METRIC_COLUMNS).query.sql_with_params()
    now = timezone.now()
    only_these, previous_params, in_lock_order = "", [], ""
    if customer_ids is not None:
        only_these, previous_params = "WHERE customer_id = ANY(%s::uuid[])", [[str(item) for item in customer_ids]]
        # Batches of evaluations run side by side: rows locked in one order never deadlock.
        in_lock_order = "ORDER BY customer_id"
    ctes = f"""
    computed AS MATERIALIZED (
        SELECT c.id AS customer_id, {tier_sql} AS tier, {quals_sql} AS qualifications
        FROM ({eligible_sql}) AS c
    ),
    previous AS MATERIALIZED (SELECT customer_id, tier FROM segments_customertier {only_these}),
    upserted AS (
        INSERT INTO segments_customertier AS t (customer_id, tier, reached_at, qualifications, evaluated_at)
        SELECT customer_id, tier, %s, qualifications, %s FROM computed {in_lock_order}
        ON CONFLICT (customer_id) DO UPDATE SET
            tier = EXCLUDED.tier,
            qualifications = EXCLUDED.qualifications,
            evaluated_at = EXCLUDED.evaluated_at,
            reached_at = CASE WHEN t.tier = EXCLUDED.tier THEN t.reached_at ELSE EXCLUDED.reached_at END
        WHERE t.tier IS DISTINCT FROM EXCLUDED.tier OR t.qualifications IS DISTINCT FROM EXCLUDED.qualifications
        RETURNING t.customer_id, t.tier, t.qualifications
    ),
    changed AS MATERIALIZED (
        SELECT u.customer_id, p.tier AS from_tier, u.tier AS to_tier, u.qualifications
        FROM upserted u LEFT JOIN previous p ON p.customer_id = u.customer_id
        WHERE COALESCE(p.tier, 'regular') <> u.tier
    )"""  # noqa: S608 - generated from our constants; values are parameters
    tier_events = events.RowEvents(
        event_type=segment_events.TIER_CHANGED,
        rows="changed",
        subject="r.customer_id",
        data="""jsonb_build_object('customer_id', r.customer_id::text, 'from_tier', r.from_tier,
                                   'to_tier', r.to_tier, 'reached_at', %s::text, 'qualifications', r.qualifications)""",
        params=[now.isoformat()],
        restricted="false",  # eligible customers only: none is processing-restricted
    )
    (changed,) = events.record_from_rows(
        ctes=ctes,
        params=[*tier_params, *quals_params, *eligible_params, *previous_params, now, now],
        events=[tier_events],
        select="SELECT coalesce(array_agg(customer_id), '{}') FROM changed",
        actor=actor,
    )
    changed = list(changed)
    _representations_changed(changed)
    return len(changed)


def _representations_changed(customer_ids: list) -> None:
    """Drop the cached representation of many customers once the transaction commits."""
    customer_services.customers_representation_changed(customer_ids=customer_ids)


# Segments' part of data-subject rights, offered to privacy as this app's services.
from segments.data_rights import erase_customers_data as erase_customers_data  # noqa: E402
from segments.data_rights import export_customer_data as export_customer_data  # noqa: E402
