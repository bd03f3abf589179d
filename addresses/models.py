import uuid

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone as django_timezone
from simple_history.models import HistoricalRecords

from customers.data_classification import classify
from customers.history import ActorStampedHistory

MAX_ACTIVE_ADDRESSES = 10


class AddressType(models.TextChoices):
    SHIPPING = "shipping"
    BILLING = "billing"
    BOTH = "both"


class DefaultKind(models.TextChoices):
    """What an address can be the default for; a `both` address counts for each."""

    SHIPPING = "shipping"
    BILLING = "billing"


# The types an address of each kind may have, and the column that marks its default.
TYPES_FOR_KIND = {
    DefaultKind.SHIPPING: (AddressType.SHIPPING, AddressType.BOTH),
    DefaultKind.BILLING: (AddressType.BILLING, AddressType.BOTH),
}
DEFAULT_FLAG = {DefaultKind.SHIPPING: "is_default_shipping", DefaultKind.BILLING: "is_default_billing"}


def kinds_of(address_type: str) -> list[str]:
    return [kind for kind, types in TYPES_FOR_KIND.items() if address_type in types]


def _trigram_index(column: str) -> GinIndex:
    # The admin searches with icontains, which compiles to UPPER(col) LIKE UPPER(%q%).
    return GinIndex(OpClass(Upper(column), name="gin_trgm_ops"), name=f"address_{column}_trgm")


class Address(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="addresses")
    type = models.CharField(max_length=10, choices=AddressType.choices, default=AddressType.SHIPPING)
    label = models.CharField(max_length=50, blank=True, default="", help_text='e.g. "Home", "Office"')

    first_name = models.CharField(max_length=100, blank=True, default="")
    last_name = models.CharField(max_length=100, blank=True, default="")
    company = models.CharField(max_length=200, blank=True, default="")
    line1 = models.CharField("address line 1", max_length=200)
    line2 = models.CharField("address line 2", max_length=200, blank=True, default="")
    city = models.CharField(max_length=100, blank=True, default="")
    state = models.CharField(
        "state / province", max_length=100, blank=True, default="", help_text="Canonical code where the country has one"
    )
    postal_code = models.CharField(max_length=20, blank=True, default="")
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2, e.g. DE")
    phone = models.CharField(max_length=16, blank=True, default="", help_text="E.164, e.g. +4930123456")
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)

    is_default_shipping = models.BooleanField(default=False, editable=False)
    is_default_billing = models.BooleanField(default=False, editable=False)
    is_validated = models.BooleanField(
        default=False, editable=False, help_text="Checked and normalized against the country's postal rules"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="Last used for an order")
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(default=django_timezone.now, editable=False)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    history = HistoricalRecords(bases=[ActorStampedHistory])

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "addresses"
        constraints = [
            # One default per customer and kind among the active addresses, whatever door the write came through.
            models.UniqueConstraint(
                fields=["customer"],
                condition=models.Q(deleted_at__isnull=True, is_default_shipping=True),
                name="address_one_default_shipping",
            ),
            models.UniqueConstraint(
                fields=["customer"],
                condition=models.Q(deleted_at__isnull=True, is_default_billing=True),
                name="address_one_default_billing",
            ),
            models.CheckConstraint(condition=models.Q(type__in=AddressType.values), name="address_type_valid"),
            models.CheckConstraint(
                condition=models.Q(is_default_shipping=False) | models.Q(type__in=TYPES_FOR_KIND["shipping"]),
                name="address_default_shipping_matches_type",
            ),
            models.CheckConstraint(
                condition=models.Q(is_default_billing=False) | models.Q(type__in=TYPES_FOR_KIND["billing"]),
                name="address_default_billing_matches_type",
            ),
            models.CheckConstraint(
                condition=models.Q(deleted_at__isnull=True)
                | models.Q(is_default_shipping=False, is_default_billing=False),
                name="address_deleted_not_default",
            ),
            models.CheckConstraint(
                condition=models.Q(latitude__isnull=True) | models.Q(latitude__gte=-90, latitude__lte=90),
                name="address_latitude_range",
            ),
            models.CheckConstraint(
                condition=models.Q(longitude__isnull=True) | models.Q(longitude__gte=-180, longitude__lte=180),
                name="address_longitude_range",
            ),
            models.CheckConstraint(
                condition=models.Q(latitude__isnull=True, longitude__isnull=True)
                | models.Q(latitude__isnull=False, longitude__isnull=False),
                name="address_coordinates_both_or_neither",
            ),
            models.CheckConstraint(condition=models.Q(country__regex=r"^[A-Z]{2}$"), name="address_country_alpha2"),
        ]
        indexes = [
            models.Index(
                fields=["customer", "-created_at"],
                name="address_active_customer_idx",
                condition=models.Q(deleted_at__isnull=True),
            ),
            _trigram_index("postal_code"),
            _trigram_index("city"),
        ]

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.line1, self.city, self.country) if part)
        return f"{self.label}: {where}" if self.label else where

    @property
    def is_default(self) -> bool:
        return self.is_default_shipping or self.is_default_billing

    @property
    def default_for(self) -> list[str]:
        return [kind for kind, flag in DEFAULT_FLAG.items() if getattr(self, flag)]


classify(
    "addresses.Address",
    personal=[
        "label",  # typed by the customer ("Mum's flat")
        "first_name",
        "last_name",
        "company",
        "line1",
        "line2",
        "city",
        "state",
        "postal_code",
        "phone",
        "latitude",
        "longitude",
    ],
    not_personal=["type", "country"],
)
