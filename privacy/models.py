import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone as django_timezone
from simple_history.models import HistoricalRecords

from customers.data_classification import classify
from customers.history import ActorStampedHistory


class RequestKind(models.TextChoices):
    ACCESS = "access", "Access (Art. 15)"
    PORTABILITY = "portability", "Portability (Art. 20)"
    ERASURE = "erasure", "Erasure (Art. 17)"
    RECTIFICATION = "rectification", "Rectification (Art. 16)"
    RESTRICTION = "restriction", "Restriction (Art. 18)"
    OBJECTION = "objection", "Objection (Art. 21)"


class RequestStatus(models.TextChoices):
    RECEIVED = "received"
    VERIFYING = "verifying"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    REJECTED = "rejected"


OPEN_STATUSES = (RequestStatus.RECEIVED, RequestStatus.VERIFYING, RequestStatus.IN_PROGRESS, RequestStatus.ON_HOLD)
EXPORT_KINDS = (RequestKind.ACCESS, RequestKind.PORTABILITY)


class DataSubjectRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="privacy_requests")
    kind = models.CharField(max_length=20, choices=RequestKind.choices)
    status = models.CharField(max_length=20, choices=RequestStatus.choices, default=RequestStatus.RECEIVED)
    received_at = models.DateTimeField(default=django_timezone.now)
    due_at = models.DateTimeField(help_text="One month after receipt, plus any extension")
    extension_months = models.PositiveSmallIntegerField(default=0)
    extension_reason = models.TextField(blank=True, default="")
    completed_at = models.DateTimeField(null=True, blank=True)
    filed_by = models.CharField(max_length=200, help_text="Who filed it (token subject or staff user)")
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    notes = models.TextField(blank=True, default="")
    status_reason = models.TextField(blank=True, default="", help_text="Why it is on hold or was rejected")
    result_file = models.CharField(
        max_length=300, blank=True, default="", help_text="Export file, outside the web root"
    )
    result_expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=django_timezone.now)

    history = HistoricalRecords(bases=[ActorStampedHistory])

    class Meta:
        ordering = ["due_at"]
        permissions = [
            ("download_export", "Can download a customer's data export"),
            ("approve_erasure", "Can approve and run an erasure"),
            ("view_retention_report", "Can see the retention dry-run report"),
        ]
        constraints = [
            # One open request per customer and kind: filing again returns the open one.
            models.UniqueConstraint(
                fields=["customer", "kind"],
                condition=models.Q(status__in=OPEN_STATUSES),
                name="privacy_one_open_request_per_kind",
            ),
            models.CheckConstraint(condition=models.Q(kind__in=RequestKind.values), name="privacy_request_kind_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=RequestStatus.values), name="privacy_request_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(extension_months__lte=2), name="privacy_extension_at_most_two_months"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "due_at"], name="privacy_request_queue_idx"),
            models.Index(fields=["customer", "-received_at"], name="privacy_request_customer_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} request {str(self.id)[:8]} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_overdue(self) -> bool:
        return self.is_open and self.due_at < django_timezone.now()


classify(
    "privacy.DataSubjectRequest",
    personal=["notes", "status_reason", "extension_reason"],  # typed by staff, may name the customer
    not_personal=["kind", "status", "filed_by", "result_file"],
)


class ErasureLog(models.Model):
    """What was erased, when and by whom: the proof we keep, with no personal data in it."""

    id = models.BigAutoField(primary_key=True)
    request = models.ForeignKey(DataSubjectRequest, null=True, blank=True, on_delete=models.SET_NULL)
    customer_id = models.UUIDField(null=True, blank=True, help_text="Empty for sweeps over many customers")
    trigger = models.CharField(max_length=40, help_text="erasure_request, or the retention policy applied")
    performed_at = models.DateTimeField(default=django_timezone.now)
    performed_by = models.CharField(max_length=200)
    counts = models.JSONField(default=dict, help_text="Rows erased or anonymized per table")

    class Meta:
        ordering = ["-performed_at"]
        indexes = [models.Index(fields=["customer_id"], name="erasure_log_customer_idx")]

    def __str__(self) -> str:
        return f"{self.trigger} at {self.performed_at:%Y-%m-%d %H:%M}"


classify("privacy.ErasureLog", not_personal=["trigger", "performed_by", "counts"])
