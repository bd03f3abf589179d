import uuid
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex, OpClass
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models.functions import Lower, Upper
from django.utils import timezone as django_timezone
from simple_history.models import HistoricalRecords

from customers.data_classification import classify
from customers.history import ActorStampedHistory

CUSTOMER_NUMBER_SEQUENCE = "customers_customer_number_seq"
OUTBOX_SEQUENCE = "customers_outbox_sequence_seq"


class NextCustomerNumber(models.Func):
    """`C` + 9 digits from a PostgreSQL sequence, filled by the database so bulk loads get one too."""

    template = f"('C' || lpad(nextval('{CUSTOMER_NUMBER_SEQUENCE}')::text, 9, '0'))"
    output_field = models.CharField()

    def __init__(self):
        super().__init__()


class NextOutboxSequence(models.Func):
    """Insertion order of outbox rows, so events recorded in the same microsecond keep their order."""

    template = f"nextval('{OUTBOX_SEQUENCE}')"
    output_field = models.BigIntegerField()

    def __init__(self):
        super().__init__()


class CustomerStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"
    SUSPENDED = "suspended"
    ERASED = "erased"
    MERGED = "merged"  # folded into another customer (`merged_into`); only the merge undo brings it back


class Gender(models.TextChoices):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class CustomerType(models.TextChoices):
    INDIVIDUAL = "individual"
    BUSINESS = "business"


class RegistrationSource(models.TextChoices):
    WEB = "web"
    MOBILE = "mobile"
    POS = "pos"
    CALL_CENTER = "call_center"
    IMPORT = "import"
    API = "api"
    ADMIN = "admin"
    IDENTITY = "identity"
    OTHER = "other"


# Mailbox providers that deliver `first.last+tag@` to `firstlast@` (dots ignored) or `name+tag@` to `name@`.
EMAIL_DOTS_IGNORED = ("gmail.com", "googlemail.com")
EMAIL_PLUS_TAG_IGNORED = (
    *EMAIL_DOTS_IGNORED,
    "outlook.com",
    "hotmail.com",
    "live.com",
    "icloud.com",
    "me.com",
    "fastmail.com",
    "proton.me",
    "protonmail.com",
)


def _sql_list(values) -> str:
    return ", ".join("'" + value + "'" for value in values)


class CanonicalEmail(models.Func):
    """The mailbox an address reaches, in SQL (immutable, so it can be indexed): lower-cased, without
    the `+tag` where the provider ignores it, without dots where Gmail ignores them. Duplicate detection
    compares this; `customers.duplicates.canonical_email` is the same rule in Python."""

    template = (
        "(CASE"
        " WHEN split_part(lower(%(expressions)s), '@', 2) IN ("
        + _sql_list(EMAIL_DOTS_IGNORED)
        + ") THEN replace(split_part(split_part(lower(%(expressions)s), '@', 1), '+', 1), '.', '') || '@gmail.com'"
        " WHEN split_part(lower(%(expressions)s), '@', 2) IN ("
        + _sql_list(EMAIL_PLUS_TAG_IGNORED)
        + ") THEN split_part(split_part(lower(%(expressions)s), '@', 1), '+', 1) || '@'"
        " || split_part(lower(%(expressions)s), '@', 2)"
        " ELSE lower(%(expressions)s) END)"
    )
    output_field = models.CharField()
    arity = 1


def _trigram_index(column: str) -> GinIndex:
    # `icontains` compiles to UPPER(col) LIKE UPPER(%q%), so the index is on UPPER(col).
    return GinIndex(OpClass(Upper(column), name="gin_trgm_ops"), name=f"customer_{column}_trgm")


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer_number = models.CharField(max_length=10, unique=True, editable=False, db_default=NextCustomerNumber())

    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=100, blank=True, default="")
    last_name = models.CharField(max_length=100, blank=True, default="")
    phone = models.CharField(max_length=16, blank=True, default="", help_text="E.164, e.g. +14155552671")
    date_of_birth = models.DateField(null=True, blank=True)
    gender = models.CharField(max_length=10, choices=Gender.choices, default=Gender.UNKNOWN)
    customer_type = models.CharField(max_length=12, choices=CustomerType.choices, default=CustomerType.INDIVIDUAL)
    company_name = models.CharField(max_length=200, blank=True, default="")
    registration_source = models.CharField(
        max_length=20, choices=RegistrationSource.choices, default=RegistrationSource.WEB
    )
    external_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    custom_attributes = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=10, choices=CustomerStatus.choices, default=CustomerStatus.ACTIVE)
    email_verified = models.BooleanField(default=False)
    phone_verified = models.BooleanField(default=False)
    registered_at = models.DateTimeField(default=django_timezone.now)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    last_login_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(default=django_timezone.now, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    # GDPR Art. 18: data kept, but left out of segmentation, marketing exports and rich event payloads.
    processing_restricted = models.BooleanField(default=False, editable=False)
    # Set with status `merged`: the customer this one was folded into (see customers.merge). No database
    # constraint: a self-referencing (deferred) foreign key would queue a trigger event for every inserted
    # customer, which costs bulk loads and blocks their index rebuilds; only the merge services write it,
    # and customers are never deleted (erasure anonymizes).
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_constraint=False,
        db_index=False,  # customer_merged_into_idx: only the few merged rows
        related_name="merged_customers",
        editable=False,
    )

    # Purchase metrics: fed by order, support and loyalty events, never written through the API.
    order_count = models.PositiveIntegerField(default=0)
    open_order_count = models.PositiveIntegerField(default=0)
    total_spent = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    spent_currency = models.CharField(max_length=3, default="USD")
    average_order_value = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    last_order_at = models.DateTimeField(null=True, blank=True)
    loyalty_points = models.IntegerField(default=0)
    satisfaction_score = models.DecimalField(max_digits=3, decimal_places=2, null=True, blank=True)
    profile_completeness = models.PositiveSmallIntegerField(default=0)

    history = HistoricalRecords(
        bases=[ActorStampedHistory],
        excluded_fields=[
            "order_count",
            "open_order_count",
            "total_spent",
            "spent_currency",
            "average_order_value",
            "last_order_at",
            "loyalty_points",
            "satisfaction_score",
            "last_activity_at",
        ],
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("suspend_customer", "Can suspend and reinstate customers"),
            ("merge_customer", "Can merge duplicate customers and undo a merge"),
            ("import_customer", "Can import customers from CSV or XLSX"),
            ("export_customer", "Can export customers as CSV or XLSX (columns without personal data)"),
            ("export_customer_personal_data", "Can include personal data in customer exports"),
        ]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="customer_email_ci_unique"),
            models.CheckConstraint(condition=models.Q(status__in=CustomerStatus.values), name="customer_status_valid"),
            models.CheckConstraint(condition=models.Q(gender__in=Gender.values), name="customer_gender_valid"),
            models.CheckConstraint(
                condition=models.Q(customer_type__in=CustomerType.values), name="customer_type_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(profile_completeness__gte=0, profile_completeness__lte=100),
                name="customer_profile_completeness_range",
            ),
            models.CheckConstraint(
                condition=models.Q(satisfaction_score__isnull=True)
                | models.Q(satisfaction_score__gte=1, satisfaction_score__lte=5),
                name="customer_satisfaction_score_range",
            ),
            models.CheckConstraint(
                condition=models.Q(total_spent__gte=0) & models.Q(average_order_value__gte=0),
                name="customer_money_not_negative",
            ),
        ]
        indexes = [
            _trigram_index("email"),
            _trigram_index("first_name"),
            _trigram_index("last_name"),
            _trigram_index("phone"),
            _trigram_index("customer_number"),
            models.Index(fields=["-created_at", "-id"], name="customer_created_idx"),
            models.Index(fields=["status"], name="customer_status_idx"),
            GinIndex(fields=["tags"], name="customer_tags_gin"),
            # Duplicate detection: the same normalized phone, the same mailbox.
            models.Index(fields=["phone"], name="customer_phone_eq_idx", condition=~models.Q(phone="")),
            models.Index(CanonicalEmail("email"), name="customer_email_canonical_idx"),
            models.Index(
                fields=["merged_into"], name="customer_merged_into_idx", condition=models.Q(merged_into__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_number} {self.full_name}".strip()

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


classify(
    "customers.Customer",
    personal=[
        "email",
        "first_name",
        "last_name",
        "phone",
        "company_name",
        "external_id",
        "tags",
        "metadata",
        "custom_attributes",
        "date_of_birth",
    ],
    not_personal=["customer_number", "gender", "customer_type", "registration_source", "status", "spent_currency"],
)


class Theme(models.TextChoices):
    SYSTEM = "system"
    LIGHT = "light"
    DARK = "dark"


class CustomerPreferences(models.Model):
    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, primary_key=True, related_name="preferences")
    language = models.CharField(max_length=35, default="en", help_text="BCP 47 tag, e.g. en-US")
    currency = models.CharField(max_length=3, default="USD", help_text="ISO 4217")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Berlin")

    email_opt_in = models.BooleanField(default=False)
    sms_opt_in = models.BooleanField(default=False)
    push_opt_in = models.BooleanField(default=False)
    direct_mail_opt_in = models.BooleanField(default=False)

    notify_order_updates = models.BooleanField(default=True)
    notify_promotions = models.BooleanField(default=False)
    notify_newsletters = models.BooleanField(default=False)
    notify_system_alerts = models.BooleanField(default=True)

    data_sharing = models.BooleanField(default=False)
    analytics_tracking = models.BooleanField(default=False)
    personalization = models.BooleanField(default=False)
    third_party_sharing = models.BooleanField(default=False)

    theme = models.CharField(max_length=10, choices=Theme.choices, default=Theme.SYSTEM)
    custom = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=django_timezone.now, editable=False)

    history = HistoricalRecords(bases=[ActorStampedHistory])

    class Meta:
        verbose_name_plural = "customer preferences"
        constraints = [
            models.CheckConstraint(condition=models.Q(theme__in=Theme.values), name="preferences_theme_valid"),
        ]

    def __str__(self) -> str:
        return f"Preferences of {self.customer_id}"


classify(
    "customers.CustomerPreferences",
    personal=["custom"],
    not_personal=["language", "currency", "timezone", "theme"],
)


class CustomerStatusChange(models.Model):
    """Every lifecycle transition, with who made it and why."""

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=10, choices=CustomerStatus.choices)
    to_status = models.CharField(max_length=10, choices=CustomerStatus.choices)
    reason = models.TextField()
    actor = models.CharField(max_length=200)
    occurred_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["customer", "-occurred_at"], name="status_change_customer_idx")]

    def __str__(self) -> str:
        return f"{self.from_status} → {self.to_status}"


classify(
    "customers.CustomerStatusChange",
    personal=["reason"],  # typed by staff, may mention the customer
    not_personal=["from_status", "to_status", "actor"],
)


class OutboxEvent(models.Model):
    """A domain event written in the same transaction as the change it describes."""

    event_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=100)
    occurred_at = models.DateTimeField(default=django_timezone.now)
    source = models.CharField(max_length=100)
    subject = models.CharField(max_length=64, help_text="The customer id the event is about")
    data = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Publish attempts, the successful one included")
    last_error = models.TextField(blank=True, default="")
    sequence = models.BigIntegerField(db_default=NextOutboxSequence(), editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Backoff after a failed publish")

    class Meta:
        ordering = ["occurred_at"]
        indexes = [
            # A customer's events in order: their data export and erasure, and the relay's "an older
            # unpublished event of the same subject?" check (a subject's published rows are few until
            # pruned). One index for both: each is paid on every event written, a million for a big
            # segment's recalculation.
            models.Index(fields=["subject", "occurred_at", "sequence"], name="outbox_subject_seq_idx"),
            models.Index(fields=["event_type"], name="outbox_type_idx"),
            # The relay's claim order.
            models.Index(
                fields=["occurred_at", "sequence"],
                name="outbox_relay_idx",
                condition=models.Q(published_at__isnull=True),
            ),
            models.Index(
                fields=["published_at"], name="outbox_published_idx", condition=models.Q(published_at__isnull=False)
            ),
            # Events waiting for a retry (few): the claim skips whatever comes after one of them.
            models.Index(
                fields=["subject", "occurred_at", "sequence"],
                name="outbox_backoff_idx",
                condition=models.Q(published_at__isnull=True, next_attempt_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


classify(
    "customers.OutboxEvent",
    personal=["data"],  # payloads may carry personal fields (flagged in their schemas)
    not_personal=["event_type", "source", "subject", "metadata", "last_error"],  # errors never quote payloads
)


class OrderStatus(models.TextChoices):
    OPEN = "open"  # created, not yet completed
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class CustomerOrder(models.Model):
    """What the order events told us about each order: the metrics are derived from these rows.

    Keeping one row per order (instead of incrementing counters) makes the metrics right whatever
    the delivery order or duplication of the events, and lets segments count recent orders.
    """

    order_id = models.CharField(max_length=64, primary_key=True)
    # No index of its own: order_customer_placed_idx leads with it (inbound ingestion writes an order
    # per event, and every index is a random insert). No database constraint either: its check runs
    # at commit per row and takes a share lock on the customer's row (a write to that row); every
    # order is written for a customer the batch has just resolved, and customers are never deleted.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="orders", db_index=False, db_constraint=False
    )
    total = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=OrderStatus.choices)
    placed_at = models.DateTimeField()
    status_changed_at = models.DateTimeField(help_text="occurred_at of the event that set the status")

    class Meta:
        indexes = [models.Index(fields=["customer", "placed_at"], name="order_customer_placed_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=OrderStatus.values), name="order_status_valid"),
            models.CheckConstraint(condition=models.Q(total__gte=0), name="order_total_not_negative"),
        ]

    def __str__(self) -> str:
        return self.order_id


classify("customers.CustomerOrder", not_personal=["order_id", "currency", "status"])


class SupportCase(models.Model):
    """The rating of each closed support case, as the support events describe it (feeds satisfaction_score)."""

    case_id = models.CharField(max_length=64, primary_key=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="support_cases")
    rating = models.PositiveSmallIntegerField()
    closed_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["customer", "-closed_at"], name="support_case_customer_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(rating__gte=1, rating__lte=5), name="support_case_rating_range"),
        ]

    def __str__(self) -> str:
        return self.case_id


classify("customers.SupportCase", not_personal=["case_id"])


class InboxMessage(models.Model):
    """One row per inbound event applied: redelivery of the same `event_id` changes nothing.

    Written in the same transaction as the event's effect. Rows older than `INBOX_RETENTION`
    are pruned, far beyond any broker's redelivery window.
    """

    event_id = models.UUIDField(primary_key=True)
    event_type = models.CharField(max_length=100)
    source = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        indexes = [models.Index(fields=["received_at"], name="inbox_received_idx")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


classify("customers.InboxMessage", not_personal=["event_type", "source"])


class DeadLetterStatus(models.TextChoices):
    PARKED = "parked"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class DeadLetter(models.Model):
    """An inbound message that could not be applied: parked for staff instead of crashing the consumer."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=100, blank=True, default="", help_text="As sent; may be malformed")
    event_type = models.CharField(max_length=100, blank=True, default="")
    routing_key = models.CharField(max_length=255, blank=True, default="")
    reason = models.CharField(max_length=50, help_text="Stable code, e.g. INVALID_PAYLOAD, CUSTOMER_NOT_FOUND")
    error = models.TextField(blank=True, default="", help_text="What was wrong, without the values")
    body = models.TextField(help_text="The raw message body (may hold personal data)")
    status = models.CharField(max_length=10, choices=DeadLetterStatus.choices, default=DeadLetterStatus.PARKED)
    times_seen = models.PositiveIntegerField(default=1)
    received_at = models.DateTimeField(default=django_timezone.now)
    last_seen_at = models.DateTimeField(default=django_timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-received_at"], name="dead_letter_status_idx"),
            models.Index(fields=["event_id"], name="dead_letter_event_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=DeadLetterStatus.values), name="dead_letter_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reason} {self.event_type or '?'} {self.event_id or ''}".strip()


classify(
    "customers.DeadLetter",
    personal=["body"],
    not_personal=["event_id", "event_type", "routing_key", "reason", "error", "status", "resolved_by"],
)


class CustomerActivity(models.Model):
    """One entry of a customer's timeline: storefront tracking, inbound events and our own events."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: activity_timeline_idx leads with it (every timeline entry of a set-based
    # event, a segment's 450,000 joins, would pay for a second one). No database constraint, as for
    # orders: its per-row check at commit locked each customer's row, 1.8 s of a 100,000-member
    # segment's first calculation; entries are only written for customers that exist.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="activities", db_index=False, db_constraint=False
    )
    type = models.CharField(max_length=50)
    occurred_at = models.DateTimeField()
    source = models.CharField(max_length=100, help_text="The service the activity came from")
    summary = models.CharField(max_length=300, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    event_id = models.UUIDField(null=True, blank=True, unique=True, help_text="The event or client id it came from")
    created_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        verbose_name_plural = "customer activities"
        ordering = ["-occurred_at", "-id"]
        indexes = [
            # The timeline: one customer, newest first, keyset-paginated on (occurred_at, id).
            models.Index(fields=["customer", "-occurred_at", "-id"], name="activity_timeline_idx"),
            # Pruning by age: rows arrive roughly in time order, so a BRIN index stays tiny.
            BrinIndex(fields=["occurred_at"], name="activity_occurred_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.occurred_at:%Y-%m-%d %H:%M}"


classify(
    "customers.CustomerActivity",
    personal=["summary", "data"],  # tracked pages, searches and client-written summaries may identify the person
    not_personal=["type", "source"],
)


# ---------------------------------------------------------------- the back-office: notes, duplicates, merges, access


class NoteKind(models.TextChoices):
    SUPPORT = "support"
    SALES = "sales"
    COMPLIANCE = "compliance"  # seen only by the Compliance and Administrator groups (view_compliance_note)
    GENERAL = "general"


NOTE_SEARCH_CONFIG = "english"


class CustomerNote(models.Model):
    """A note staff (or another service) wrote about a customer; pinned ones are shown first."""

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="notes")
    kind = models.CharField(max_length=12, choices=NoteKind.choices, default=NoteKind.GENERAL)
    text = models.TextField()
    is_pinned = models.BooleanField("pinned", default=False)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    written_by = models.CharField(max_length=200, editable=False, help_text="Actor label: staff:…, token:…")
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(default=django_timezone.now, editable=False)
    # Full-text search across all notes (GIN index); kept by PostgreSQL itself.
    search = models.GeneratedField(
        expression=SearchVector("text", config=NOTE_SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    history = HistoricalRecords(bases=[ActorStampedHistory], excluded_fields=["search"])

    class Meta:
        ordering = ["-is_pinned", "-created_at", "-id"]
        permissions = [("view_compliance_note", "Can see and write compliance notes")]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=NoteKind.values), name="note_kind_valid"),
            models.CheckConstraint(condition=~models.Q(text=""), name="note_text_present"),
        ]
        indexes = [
            models.Index(fields=["customer", "-is_pinned", "-created_at"], name="note_customer_idx"),
            models.Index(fields=["author", "-created_at"], name="note_author_idx"),
            models.Index(fields=["-created_at"], name="note_created_idx"),
            GinIndex(fields=["search"], name="note_search_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} note {self.pk}"


classify(
    "customers.CustomerNote",
    personal=["text"],  # typed by staff about the person
    not_personal=["kind", "written_by"],
)


class DuplicateReason(models.TextChoices):
    PHONE = "phone", "Same phone number"
    EMAIL = "email", "Same mailbox (email ignoring dots and +tag where the provider does)"
    NAME_POSTAL_CODE = "name_postal_code", "Same name and postal code"


class DuplicateStatus(models.TextChoices):
    OPEN = "open"
    DISMISSED = "dismissed"  # reviewed: not the same person
    MERGED = "merged"


class DuplicateCandidate(models.Model):
    """Two customers that may be one person, for a rep to review; never merged automatically.

    The pair is stored once, the lower id first.
    """

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    other = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    reasons = ArrayField(models.CharField(max_length=20, choices=DuplicateReason.choices))
    status = models.CharField(max_length=10, choices=DuplicateStatus.choices, default=DuplicateStatus.OPEN)
    detected_at = models.DateTimeField(default=django_timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-detected_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "other"], name="duplicate_pair_unique"),
            models.CheckConstraint(condition=models.Q(customer__lt=models.F("other")), name="duplicate_pair_ordered"),
            models.CheckConstraint(
                condition=models.Q(status__in=DuplicateStatus.values), name="duplicate_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["other"], name="duplicate_other_idx"),
            models.Index(fields=["-detected_at"], name="duplicate_open_idx", condition=models.Q(status="open")),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} ~ {self.other_id}"


classify("customers.DuplicateCandidate", not_personal=["reasons", "status", "resolved_by"])


class CustomerMerge(models.Model):
    """One merge: who was folded into whom, which values won, and what it takes to undo it.

    `survivor_before` and `merged_before` hold the two profiles as they were; `moved` the ids of
    the rows each app moved to the survivor (`{"<app>.<table>": [...]}`), written by the apps'
    subscribers to `customer.merged.v1` in the merge's transaction.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    survivor = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    merged = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    field_choices = models.JSONField(default=dict, help_text="Field → survivor | merged | both")
    survivor_before = models.JSONField(default=dict)
    merged_before = models.JSONField(default=dict)
    survivor_after = models.JSONField(default=dict, help_text="The values the merge gave the survivor")
    moved = models.JSONField(default=dict)
    reason = models.TextField(blank=True, default="")
    merged_by = models.CharField(max_length=200)
    merged_at = models.DateTimeField(default=django_timezone.now)
    undo_until = models.DateTimeField()
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-merged_at"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(survivor=models.F("merged")), name="merge_two_customers"),
            # A customer is folded away once at a time (an undone merge frees it again).
            models.UniqueConstraint(
                fields=["merged"], condition=models.Q(undone_at__isnull=True), name="merge_one_live_per_merged"
            ),
        ]
        indexes = [models.Index(fields=["survivor", "-merged_at"], name="merge_survivor_idx")]

    def __str__(self) -> str:
        return f"merge {self.merged_id} → {self.survivor_id}"


classify(
    "customers.CustomerMerge",
    personal=["survivor_before", "merged_before", "survivor_after", "reason"],
    not_personal=["field_choices", "moved", "merged_by", "undone_by"],
)


class AccessAction(models.TextChoices):
    VIEW = "view", "Opened the customer page"
    EXPORT = "export", "Exported the customer's data"
    DOWNLOAD = "download", "Downloaded the customer's data"


class AccessLog(models.Model):
    """Who looked at whose personal data, and how: ids only, never the data itself.

    Neither foreign key has a database constraint: the log outlives an erased customer (as a
    pseudonymous id) and a removed staff account.
    """

    id = models.BigAutoField(primary_key=True)
    # No single-column indexes: access_customer_idx and access_user_idx lead with these columns, and a
    # bulk export writes a row per customer (every index costs on a million-row INSERT … SELECT).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    action = models.CharField(max_length=10, choices=AccessAction.choices)
    reference = models.CharField(
        max_length=64, blank=True, default="", help_text="The export job or privacy request it went through"
    )
    at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "access log entry"
        verbose_name_plural = "access log"
        constraints = [
            models.CheckConstraint(condition=models.Q(action__in=AccessAction.values), name="access_action_valid"),
        ]
        indexes = [
            models.Index(fields=["customer", "-at"], name="access_customer_idx"),
            models.Index(fields=["user", "-at"], name="access_user_idx"),
            BrinIndex(fields=["at"], name="access_at_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.action} {self.customer_id}"


classify("customers.AccessLog", not_personal=["action", "reference"])


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    XLSX = "xlsx", "Excel (XLSX)"


class ExportJobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class CustomerExportJob(models.Model):
    """A large customer export (CSV/XLSX) run by a Celery worker: progress for staff, then a download."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    format = models.CharField(max_length=4, choices=ExportFormat.choices)
    columns = ArrayField(models.CharField(max_length=50), help_text="What the requester may see")
    # The selection as SQL over customers_customer ids, made by the ORM from the admin's filters.
    selection_sql = models.TextField()
    selection_params = models.JSONField(default=list)
    status = models.CharField(max_length=8, choices=ExportJobStatus.choices, default=ExportJobStatus.QUEUED)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    file_path = models.CharField(max_length=300, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=django_timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # A worker that dies leaves its job running: after a while without a heartbeat the sweep puts it
    # back in the queue, a few times at most (customers.bulk_export.running_jobs_recover).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "customer export"
        constraints = [
            models.CheckConstraint(condition=models.Q(format__in=ExportFormat.values), name="export_job_format_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=ExportJobStatus.values), name="export_job_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_format_display()} export {str(self.id)[:8]}"

    @property
    def percent(self) -> int:
        if self.status == ExportJobStatus.DONE:
            return 100
        return min(99, round(100 * self.rows_done / self.rows_total)) if self.rows_total else 0


classify(
    "customers.CustomerExportJob",
    personal=["selection_params"],  # a search term may be an email or a name
    not_personal=["format", "columns", "selection_sql", "status", "file_path", "error"],
)
