"""Segments: definitions (static or rule-based), membership with history, calculation jobs, tiers.

Membership is history: a row is opened when a customer joins and closed (`left_at`) when they
leave; rejoining opens a new row. A partial unique index keeps one open row per customer and
segment whatever door the write came through.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone as django_timezone
from simple_history.models import HistoricalRecords

from customers.data_classification import classify
from customers.history import ActorStampedHistory

SEGMENT_CODE_PATTERN = r"^[a-z][a-z0-9_]{1,49}$"
RESERVED_SEGMENT_CODES = ("preview", "overlap")  # path segments under /segments/


class SegmentKind(models.TextChoices):
    STATIC = "static", "Static (members assigned by hand, API or CSV)"
    DYNAMIC = "dynamic", "Dynamic (members computed from rules)"


class SegmentStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"
    CALCULATING = "calculating"
    ERROR = "error"


class MembershipSource(models.TextChoices):
    RULE = "rule"
    MANUAL = "manual"
    IMPORT = "import"


class Segment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    code = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(SEGMENT_CODE_PATTERN, "Lower-case letters, digits and underscores.")],
        help_text="Stable identifier, e.g. high_value; rules refer to segments by it",
    )
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=10, choices=SegmentKind.choices, default=SegmentKind.STATIC)
    status = models.CharField(max_length=12, choices=SegmentStatus.choices, default=SegmentStatus.ACTIVE)
    error = models.TextField(blank=True, default="", help_text="Why the last calculation failed (status error)")
    rules = models.JSONField(null=True, blank=True, help_text="The rule tree of a dynamic segment")
    requires_consent = models.CharField(
        max_length=50, blank=True, default="", help_text="Consent purpose code; members without it are excluded"
    )
    member_count = models.PositiveIntegerField(default=0, editable=False)
    last_calculated_at = models.DateTimeField(null=True, blank=True, editable=False)
    is_builtin = models.BooleanField(default=False, editable=False, help_text="Created by the platform")
    created_by = models.CharField(max_length=200, editable=False, help_text="The actor that created it")
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(default=django_timezone.now, editable=False)

    history = HistoricalRecords(
        bases=[ActorStampedHistory],
        # Written by calculations (not by staff): the calculation jobs are their record.
        excluded_fields=["member_count", "last_calculated_at"],
    )

    class Meta:
        ordering = ["name"]
        permissions = [
            ("recalculate_segment", "Can recalculate a segment"),
            ("manage_segment_members", "Can add and remove members of a static segment"),
            ("export_segment_members", "Can export the members of a segment"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=SegmentKind.values), name="segment_kind_valid"),
            models.CheckConstraint(condition=models.Q(status__in=SegmentStatus.values), name="segment_status_valid"),
            models.CheckConstraint(
                condition=models.Q(code__regex=SEGMENT_CODE_PATTERN) & ~models.Q(code__in=RESERVED_SEGMENT_CODES),
                name="segment_code_format",
            ),
            models.CheckConstraint(
                condition=models.Q(kind=SegmentKind.STATIC, rules__isnull=True)
                | models.Q(kind=SegmentKind.DYNAMIC, rules__isnull=False),
                name="segment_rules_only_dynamic",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dynamic(self) -> bool:
        return self.kind == SegmentKind.DYNAMIC


classify(
    "segments.Segment",
    not_personal=["code", "name", "description", "kind", "status", "error", "rules", "requires_consent", "created_by"],
)


class SegmentMembership(models.Model):
    id = models.BigAutoField(primary_key=True)
    # No database constraint on the customer: a recalculation opens up to a million rows in one
    # statement, and checking each against customers (a FOR KEY SHARE row lock per customer) doubles
    # its cost. Rows are only ever written for eligible customers by segments' services, customers are
    # never deleted (erasure removes the memberships through segments.data_rights), and the ORM still
    # cascades a customer's deletion. The same holds for CustomerTier.
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.CASCADE,
        related_name="segment_memberships",
        db_index=False,
        db_constraint=False,
    )
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    joined_at = models.DateTimeField(default=django_timezone.now)
    left_at = models.DateTimeField(null=True, blank=True)
    score = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0"), help_text="Sum of the weights of the rules that hold"
    )
    source = models.CharField(max_length=10, choices=MembershipSource.choices)
    added_by = models.CharField(max_length=200, blank=True, default="", help_text="Actor of a manual or import add")

    class Meta:
        ordering = ["-joined_at", "-id"]
        constraints = [
            # One open row per customer and segment; (segment, customer) order also serves the
            # recalculation diff and member lists of one segment.
            models.UniqueConstraint(
                fields=["segment", "customer"],
                condition=models.Q(left_at__isnull=True),
                name="segment_membership_one_open",
            ),
            models.CheckConstraint(
                condition=models.Q(source__in=MembershipSource.values), name="segment_membership_source_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(left_at__isnull=True) | models.Q(left_at__gte=models.F("joined_at")),
                name="segment_membership_left_after_joined",
            ),
        ]
        indexes = [
            # A customer's memberships, past and present (and the cascade when a customer goes).
            models.Index(fields=["customer", "-joined_at"], name="segment_membership_cust_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} in {self.segment_id}"

    @property
    def is_current(self) -> bool:
        return self.left_at is None


classify("segments.SegmentMembership", not_personal=["source", "added_by"])


class CalculationStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class CalculationTrigger(models.TextChoices):
    REQUEST = "request", "Asked for (API or admin)"
    RULES_CHANGED = "rules_changed", "The rules or consent requirement changed"
    SCHEDULE = "schedule", "The nightly schedule"
    DEPENDENCY = "dependency", "A segment its rules refer to changed"


class SegmentCalculation(models.Model):
    """One full recalculation of a dynamic segment: the job a client polls and staff see."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="calculations")
    status = models.CharField(max_length=10, choices=CalculationStatus.choices, default=CalculationStatus.QUEUED)
    trigger = models.CharField(max_length=14, choices=CalculationTrigger.choices, default=CalculationTrigger.REQUEST)
    requested_by = models.CharField(max_length=200)
    requested_at = models.DateTimeField(default=django_timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    joined = models.PositiveIntegerField(null=True, blank=True)
    left = models.PositiveIntegerField(null=True, blank=True)
    rescored = models.PositiveIntegerField(null=True, blank=True)
    member_count = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=CalculationStatus.values), name="segment_calculation_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(trigger__in=CalculationTrigger.values), name="segment_calculation_trigger_valid"
            ),
            # The concurrency guard, in the database: one unfinished calculation per segment.
            models.UniqueConstraint(
                fields=["segment"],
                condition=models.Q(status__in=[CalculationStatus.QUEUED, CalculationStatus.RUNNING]),
                name="segment_calculation_one_open",
            ),
        ]
        indexes = [models.Index(fields=["segment", "-requested_at"], name="segment_calculation_seg_idx")]

    def __str__(self) -> str:
        return f"{self.segment_id} {self.status} {self.requested_at:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.status in (CalculationStatus.QUEUED, CalculationStatus.RUNNING)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


classify("segments.SegmentCalculation", not_personal=["status", "trigger", "requested_by", "error"])


class Tier(models.TextChoices):
    REGULAR = "regular"
    PREMIUM = "premium"
    VIP = "vip"
    ENTERPRISE = "enterprise"


TIER_LADDER = (Tier.REGULAR, Tier.PREMIUM, Tier.VIP, Tier.ENTERPRISE)


class CustomerTier(models.Model):
    """The customer's tier as last evaluated, when they reached it and which qualifications held."""

    customer = models.OneToOneField(
        "customers.Customer",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="segment_tier",
        db_constraint=False,  # see SegmentMembership.customer
    )
    tier = models.CharField(max_length=12, choices=Tier.choices, default=Tier.REGULAR)
    reached_at = models.DateTimeField(default=django_timezone.now)
    qualifications = models.JSONField(default=dict, help_text="Per tier above regular: which thresholds hold")
    evaluated_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(tier__in=Tier.values), name="customer_tier_valid")]
        indexes = [models.Index(fields=["tier"], name="customer_tier_tier_idx")]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.tier}"


classify("segments.CustomerTier", not_personal=["tier", "qualifications"])
