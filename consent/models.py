"""Consent: purposes and their wording (data), the append-only record, and the current state per purpose.

`ConsentRecord` is the proof: one row per change, never updated or deleted (the model refuses,
and a database trigger refuses too, see migration 0002). `ConsentState` is the current state per
customer and purpose, written in the same transaction as each record, so reads never replay the
record.
"""

from __future__ import annotations

import hashlib
import uuid

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone as django_timezone
from simple_history.models import HistoricalRecords

from customers.data_classification import classify
from customers.history import ActorStampedHistory

PURPOSE_CODE_PATTERN = r"^[a-z][a-z0-9_]{1,49}$"
RESERVED_PURPOSE_CODES = ("history",)  # path segments under /customers/{id}/consents/


class ConsentStatus(models.TextChoices):
    NOT_REQUESTED = "not_requested"
    PENDING = "pending"
    GRANTED = "granted"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"


class ConsentSource(models.TextChoices):
    WEB = "web"
    MOBILE = "mobile"
    EMAIL_LINK = "email_link"
    CALL_CENTER = "call_center"
    IMPORT = "import"
    ADMIN = "admin"
    SYSTEM = "system", "System (scheduled jobs, e.g. expiry)"


class ConsentTrigger(models.TextChoices):
    """Why the record was written (not personal; kept when erasure redacts the record)."""

    CHOICE = "choice", "The customer's answer (API or staff on their behalf)"
    PREFERENCES = "preferences", "A marketing opt-in changed in the preferences"
    SIGN_UP = "sign_up", "The choice made at registration"
    RENEWAL = "renewal", "Granted again on a newer policy version"
    OBJECTION = "objection", "Objection to direct marketing (GDPR Art. 21(3))"
    EXPIRY = "expiry", "The grant's validity ran out"
    BACKFILL = "backfill", "State carried over when consent records were introduced"


class AppendOnlyViolation(Exception):
    """Raised when code tries to change or remove a consent record."""


def notice_text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ConsentPurpose(models.Model):
    """Why we process data under consent. Rows, not code: compliance adds and edits them."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    code = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(PURPOSE_CODE_PATTERN, "Lower-case letters, digits and underscores.")],
        help_text="Stable identifier used by the API, e.g. marketing_email",
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    is_marketing = models.BooleanField(
        default=False, help_text="Direct marketing: never implicit, withdrawn at once by an objection"
    )
    default_validity_months = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="A grant expires this many months after it was given (empty: no expiry)"
    )
    allows_implicit = models.BooleanField(
        default=False, help_text="Whether a grant may be recorded without an affirmative act (never for marketing)"
    )
    display_order = models.PositiveSmallIntegerField(default=100)
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(default=django_timezone.now, editable=False)

    history = HistoricalRecords(bases=[ActorStampedHistory])

    class Meta:
        ordering = ["display_order", "code"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(is_marketing=True, allows_implicit=True), name="consent_purpose_marketing_explicit"
            ),
            models.CheckConstraint(
                condition=models.Q(code__regex=PURPOSE_CODE_PATTERN) & ~models.Q(code__in=RESERVED_PURPOSE_CODES),
                name="consent_purpose_code_format",
            ),
            models.CheckConstraint(
                condition=models.Q(default_validity_months__isnull=True) | models.Q(default_validity_months__gt=0),
                name="consent_purpose_validity_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.code


classify(
    "consent.ConsentPurpose",
    not_personal=["code", "name", "description"],
)


class PolicyVersion(models.Model):
    """The exact wording shown for a purpose. Once a record points at it, its wording is frozen."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    purpose = models.ForeignKey(ConsentPurpose, on_delete=models.PROTECT, related_name="policy_versions")
    version = models.CharField(max_length=50, help_text="Label shown to staff and sent by clients, e.g. 2025-03")
    notice_text = models.TextField(blank=True, default="", help_text="The exact notice the customer is shown")
    notice_url = models.URLField(max_length=500, blank=True, default="", help_text="Where the notice is published")
    text_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the notice text (filled from the text when the text is given)"
    )
    effective_at = models.DateTimeField(help_text="From when this wording is the one shown")
    requires_reconsent = models.BooleanField(
        default=False, help_text="Grants on earlier versions need renewal once this version is in effect"
    )
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)

    history = HistoricalRecords(bases=[ActorStampedHistory])

    # Columns that are the proof of wording: frozen once a record points at the version (trigger in 0002).
    WORDING_FIELDS = ("purpose", "version", "notice_text", "notice_url", "text_hash", "effective_at")

    class Meta:
        ordering = ["purpose__display_order", "-effective_at"]
        constraints = [
            models.UniqueConstraint(fields=["purpose", "version"], name="consent_policy_version_unique_label"),
            models.UniqueConstraint(fields=["purpose", "effective_at"], name="consent_policy_version_unique_start"),
            models.CheckConstraint(
                condition=~models.Q(notice_text="") | ~models.Q(notice_url=""),
                name="consent_policy_version_has_wording",
            ),
            models.CheckConstraint(condition=models.Q(text_hash__regex=r"^[0-9a-f]{64}$"), name="consent_policy_hash"),
        ]
        indexes = [models.Index(fields=["purpose", "-effective_at"], name="consent_policy_effective_idx")]

    def __str__(self) -> str:
        return f"{self.purpose.code} {self.version}"


classify(
    "consent.PolicyVersion",
    not_personal=["version", "notice_text", "notice_url", "text_hash"],
)


class ConsentRecordQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyViolation("Consent records are append-only: record a new change instead.")

    def delete(self):
        raise AppendOnlyViolation("Consent records are append-only and are never deleted.")

    def _redact_personal_data(self, *, at) -> int:
        """Erasure only: blank IP, user agent and staff reason. The trigger allows exactly this."""
        return super().update(ip_address=None, user_agent="", reason="", redacted_at=at)


class ConsentRecord(models.Model):
    """One change of one customer's consent for one purpose: who, what, when, how, which wording.

    `customer` is a foreign key without a database constraint: the column is a plain indexed
    UUID, so erasure can leave the record pointing at the anonymized customer (a pseudonymous id)
    and nothing ever cascades into the proof.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # consent_record_customer_idx covers it
        related_name="consent_records",
    )
    purpose = models.ForeignKey(ConsentPurpose, on_delete=models.PROTECT, related_name="records", db_index=False)
    status = models.CharField(max_length=14, choices=ConsentStatus.choices)
    previous_status = models.CharField(
        max_length=14, choices=ConsentStatus.choices, blank=True, default="", help_text="Empty on the first record"
    )
    policy_version = models.ForeignKey(
        PolicyVersion, on_delete=models.PROTECT, related_name="records", help_text="The wording in force / shown"
    )
    implicit = models.BooleanField(default=False, help_text="Granted without an affirmative act")
    trigger = models.CharField(max_length=12, choices=ConsentTrigger.choices)
    occurred_at = models.DateTimeField(default=django_timezone.now, help_text="When the change took effect")
    recorded_at = models.DateTimeField(default=django_timezone.now, editable=False, help_text="When it was written")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="For grants: when the grant expires")
    source = models.CharField(max_length=12, choices=ConsentSource.choices)
    actor = models.CharField(max_length=200, help_text="Who recorded it: token:<subject>, staff:<username>, system:…")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True, default="")
    reason = models.TextField(blank=True, default="", help_text="Why staff recorded the change")
    redacted_at = models.DateTimeField(null=True, blank=True, help_text="When erasure blanked the personal fields")

    objects = ConsentRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at"]
        permissions = [("export_consentrecord", "Can export consent records for an audit")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=ConsentStatus.values), name="consent_record_status"),
            models.CheckConstraint(
                condition=models.Q(previous_status__in=[*ConsentStatus.values, ""]),
                name="consent_record_previous_status",
            ),
            models.CheckConstraint(condition=models.Q(source__in=ConsentSource.values), name="consent_record_source"),
            models.CheckConstraint(
                condition=models.Q(trigger__in=ConsentTrigger.values), name="consent_record_trigger"
            ),
            models.CheckConstraint(condition=~models.Q(actor=""), name="consent_record_actor_present"),
            models.CheckConstraint(
                condition=~models.Q(actor__startswith="staff:")
                | ~models.Q(reason="")
                | models.Q(redacted_at__isnull=False),
                name="consent_record_staff_reason",
            ),
            models.CheckConstraint(
                condition=~models.Q(implicit=True) | models.Q(status=ConsentStatus.GRANTED),
                name="consent_record_implicit_only_grants",
            ),
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True) | models.Q(status=ConsentStatus.GRANTED),
                name="consent_record_validity_only_grants",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="consent_record_customer_idx"),
            models.Index(fields=["purpose", "status", "-occurred_at"], name="consent_record_purpose_idx"),
            models.Index(fields=["-occurred_at"], name="consent_record_occurred_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose.code}: {self.previous_status or '∅'} → {self.status}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyViolation("Consent records are append-only: record a new change instead.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyViolation("Consent records are append-only and are never deleted.")


classify(
    "consent.ConsentRecord",
    personal=["ip_address", "user_agent", "reason"],  # reason is typed by staff and may name the customer
    not_personal=["status", "previous_status", "source", "actor", "trigger"],
)


class ConsentState(models.Model):
    """The current state per customer and purpose: the last record, kept in the same transaction."""

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="consent_states", db_index=False
    )  # consent_state_one_per_purpose covers it
    purpose = models.ForeignKey(ConsentPurpose, on_delete=models.PROTECT, related_name="states", db_index=False)
    status = models.CharField(max_length=14, choices=ConsentStatus.choices)
    policy_version = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="states")
    source = models.CharField(max_length=12, choices=ConsentSource.choices)
    granted_at = models.DateTimeField(null=True, blank=True, help_text="When the current grant was given")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="When the current grant expires")
    updated_at = models.DateTimeField(help_text="When the last change occurred")
    last_record = models.ForeignKey(ConsentRecord, on_delete=models.PROTECT, related_name="+")

    class Meta:
        # No default ordering: ordering millions of states by a joined column is never wanted by accident.
        constraints = [
            models.UniqueConstraint(fields=["customer", "purpose"], name="consent_state_one_per_purpose"),
            models.CheckConstraint(condition=models.Q(status__in=ConsentStatus.values), name="consent_state_status"),
            models.CheckConstraint(
                condition=models.Q(status=ConsentStatus.GRANTED)
                | models.Q(granted_at__isnull=True, valid_until__isnull=True),
                name="consent_state_dates_only_when_granted",
            ),
        ]
        indexes = [
            models.Index(fields=["purpose", "status"], name="consent_state_purpose_idx"),
            models.Index(
                fields=["valid_until"],
                name="consent_state_expiry_idx",
                condition=models.Q(status="granted", valid_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose.code}: {self.status}"


classify(
    "consent.ConsentState",
    not_personal=["status", "source"],
)
