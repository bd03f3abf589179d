"""Purposes and policy versions, edited by compliance staff."""

from __future__ import annotations

import logging
import re
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from consent.errors import PolicyVersionInUse
from consent.models import (
    PURPOSE_CODE_PATTERN,
    RESERVED_PURPOSE_CODES,
    ConsentPurpose,
    ConsentRecord,
    PolicyVersion,
    notice_text_hash,
)
from customers.actor import Actor
from customers.errors import ValidationFailed
from customers.history import stamp

logger = logging.getLogger(__name__)


PURPOSE_FIELDS = (
    "code",
    "name",
    "description",
    "is_marketing",
    "default_validity_months",
    "allows_implicit",
    "display_order",
)
POLICY_VERSION_FIELDS = ("version", "notice_text", "notice_url", "text_hash", "effective_at", "requires_reconsent")


def _check_purpose(purpose: ConsentPurpose) -> None:
    errors: dict[str, list[str]] = {}
    if not re.match(PURPOSE_CODE_PATTERN, purpose.code or "") or purpose.code in RESERVED_PURPOSE_CODES:
        errors["code"] = ["Lower-case letters, digits and underscores, 2-50 characters (not 'history')."]
    if not (purpose.name or "").strip():
        errors["name"] = ["This field is required."]
    if purpose.is_marketing and purpose.allows_implicit:
        errors["allows_implicit"] = ["Marketing consent is never implicit."]
    if purpose.default_validity_months is not None and purpose.default_validity_months <= 0:
        errors["default_validity_months"] = ["Must be positive (or empty for no expiry)."]
    if errors:
        raise ValidationFailed("The purpose is invalid.", errors=errors)


def _record_states_when_first_in_effect(version: PolicyVersion) -> None:
    """When this is the purpose's first wording, every customer gets an explicit not_requested once it
    takes effect (a record needs the wording in force, so a purpose without one has no states yet):
    queued on commit, at `effective_at` when that is still to come. Set-based and batched in the task.
    """
    earlier = PolicyVersion.objects.filter(purpose_id=version.purpose_id, effective_at__lt=version.effective_at)
    if earlier.exclude(pk=version.pk).exists():
        return  # an earlier version took (or takes) effect first and queued the recording then

    def queue() -> None:
        from consent.tasks import record_missing_states

        eta = version.effective_at if version.effective_at > timezone.now() else None
        record_missing_states.apply_async(args=[str(version.purpose_id)], eta=eta)

    transaction.on_commit(queue)


def _drop_representations_when_reconsent(version: PolicyVersion) -> None:
    """A wording that requires re-consent makes existing grants stop counting, so the opt-ins of
    every customer holding one read as off: their cached representations go (on commit, at
    `effective_at` when that is still to come; representations cached meanwhile live no longer
    than that moment, see `sync.opt_ins_as_consented`).
    """
    if not version.requires_reconsent:
        return

    def queue() -> None:
        from consent.tasks import drop_granted_representations

        eta = version.effective_at if version.effective_at > timezone.now() else None
        drop_granted_representations.apply_async(args=[str(version.purpose_id)], eta=eta)

    transaction.on_commit(queue)


@transaction.atomic
def purpose_create(*, actor: Actor, code: str, name: str, **values: Any) -> ConsentPurpose:
    """A new purpose. Customers get their explicit `not_requested` for it when its first policy
    version takes effect (`policy_version_create`): a consent record always names the wording in force.
    """
    purpose_validate(values={"code": code, "name": name, **values})
    purpose = ConsentPurpose(code=code, name=name, **values)
    stamp(purpose, actor, "created")
    purpose.save()
    return purpose


@transaction.atomic
def purpose_update(*, actor: Actor, purpose_id: UUID, changes: dict[str, Any]) -> ConsentPurpose:
    purpose = ConsentPurpose.objects.select_for_update().get(pk=purpose_id)
    purpose_validate(values=changes, purpose_id=purpose_id)
    changed = sorted(name for name, value in changes.items() if getattr(purpose, name) != value)
    if not changed:
        return purpose
    for name in changed:
        setattr(purpose, name, changes[name])
    purpose.updated_at = timezone.now()
    stamp(purpose, actor, "updated: " + ", ".join(changed))
    purpose.save()
    return purpose


def purpose_validate(*, values: dict[str, Any], purpose_id: UUID | None = None) -> None:
    """Every check `purpose_create` (no id) or `purpose_update` applies, without writing: for forms
    that show the refusal per field. Raises the same ValidationFailed the write would."""
    unknown = set(values) - set(PURPOSE_FIELDS)
    if unknown:
        raise ValidationFailed("Unknown fields.", errors={name: ["Not a purpose field."] for name in sorted(unknown)})
    if purpose_id is None:
        if ConsentPurpose.objects.filter(code=values.get("code")).exists():
            raise ValidationFailed("A purpose with this code exists.", errors={"code": ["Already in use."]})
        purpose = ConsentPurpose(**values)
    else:
        purpose = ConsentPurpose.objects.get(pk=purpose_id)
        if "code" in values and values["code"] != purpose.code:
            raise ValidationFailed(
                "A purpose's code never changes: clients and records use it.", errors={"code": ["Cannot be changed."]}
            )
        for name, value in values.items():
            setattr(purpose, name, value)
    _check_purpose(purpose)


def policy_version_validate(
    *, values: dict[str, Any], purpose_id: UUID | None = None, policy_version_id: UUID | None = None
) -> None:
    """Every check `policy_version_create` (no version id) or `policy_version_update` applies,
    without writing. Raises the same ValidationFailed / PolicyVersionInUse the write would."""
    _refuse_unknown_version_fields(values)
    if policy_version_id is None:
        version = PolicyVersion(purpose_id=purpose_id, **values)
    else:
        version = PolicyVersion.objects.get(pk=policy_version_id)
        _apply_version_changes(version, values)
    _check_wording(version)


def _refuse_unknown_version_fields(values: dict[str, Any]) -> None:
    unknown = set(values) - set(POLICY_VERSION_FIELDS)
    if unknown:
        raise ValidationFailed("Unknown fields.", errors={name: ["Not a version field."] for name in sorted(unknown)})


def _apply_version_changes(version: PolicyVersion, changes: dict[str, Any]) -> list[str]:
    """Set the changes on `version` (in memory) and return the changed names; the wording of a version
    that recorded consent points at never changes."""
    _refuse_unknown_version_fields(changes)
    changed = sorted(name for name, value in changes.items() if getattr(version, name) != value)
    wording = [name for name in changed if name in PolicyVersion.WORDING_FIELDS]
    if wording and policy_version_in_use(version):
        raise PolicyVersionInUse(
            f"Version {version.version} of {version.purpose.code} is the wording of recorded consent: "
            f"{', '.join(wording)} cannot change. Publish a new version instead."
        )
    for name in changed:
        setattr(version, name, changes[name])
    if "notice_text" in changed and "text_hash" not in changed:
        version.text_hash = ""
    return changed


def _check_wording(version: PolicyVersion) -> None:
    errors: dict[str, list[str]] = {}
    version.version = (version.version or "").strip()
    if not version.version:
        errors["version"] = ["This field is required."]
    if version.notice_url:
        try:
            URLValidator()(version.notice_url)
        except DjangoValidationError:
            errors["notice_url"] = ["Enter a valid URL."]
    if version.notice_text:
        text_hash = notice_text_hash(version.notice_text)
        if version.text_hash and version.text_hash != text_hash:
            errors["text_hash"] = ["Does not match the notice text (leave empty to compute it)."]
        version.text_hash = text_hash
    elif not (version.notice_url and version.text_hash):
        errors["notice_text"] = ["Give the exact notice text, or its URL and SHA-256 hash."]
    elif len(version.text_hash) != 64 or any(ch not in "0123456789abcdef" for ch in version.text_hash):
        errors["text_hash"] = ["A SHA-256 hash: 64 lower-case hex digits."]
    if version.effective_at is None:
        errors["effective_at"] = ["This field is required."]
    if errors:
        raise ValidationFailed("The policy version is invalid.", errors=errors)
    clash = PolicyVersion.objects.filter(purpose_id=version.purpose_id).exclude(pk=version.pk)
    if clash.filter(version=version.version).exists():
        raise ValidationFailed("This purpose already has that version.", errors={"version": ["Already in use."]})
    if clash.filter(effective_at=version.effective_at).exists():
        raise ValidationFailed(
            "Another version of this purpose takes effect at the same moment.",
            errors={"effective_at": ["Another version starts at this moment."]},
        )


@transaction.atomic
def policy_version_create(*, actor: Actor, purpose_id: UUID, **values: Any) -> PolicyVersion:
    _refuse_unknown_version_fields(values)
    purpose = ConsentPurpose.objects.select_for_update().get(pk=purpose_id)
    version = PolicyVersion(purpose=purpose, **values)
    _check_wording(version)
    stamp(version, actor, "created")
    version.save()
    _record_states_when_first_in_effect(version)
    _drop_representations_when_reconsent(version)
    return version


def policy_version_in_use(version: PolicyVersion) -> bool:
    return ConsentRecord.objects.filter(policy_version=version).exists()


@transaction.atomic
def policy_version_update(*, actor: Actor, policy_version_id: UUID, changes: dict[str, Any]) -> PolicyVersion:
    """Correct a version not yet shown to anyone; once a record points at it, only
    `requires_reconsent` may change (its wording is the proof of what customers agreed to).
    """
    version = PolicyVersion.objects.select_for_update().get(pk=policy_version_id)
    changed = _apply_version_changes(version, changes)
    if not changed:
        return version
    _check_wording(version)
    stamp(version, actor, "updated: " + ", ".join(changed))
    version.save()
    if "effective_at" in changed:
        _record_states_when_first_in_effect(version)
    if "requires_reconsent" in changed or "effective_at" in changed:
        _drop_representations_when_reconsent(version)
    return version
