"""Customer import from CSV or XLSX (django-import-export), every change through the services.

The admin's first step is a dry run: each row is checked by the same rules `customer_create` and
`customer_update` apply (`customer_validate_profile`), nothing is written, and the errors are shown
per row and field. Confirming imports in batches of IMPORT_BATCH_ROWS rows, one transaction each:
a row whose email (case-insensitive) belongs to a customer updates that customer; any other row
registers a new one. Events, history and duplicate detection follow from the services.
"""

from __future__ import annotations

import tablib
from django.core.exceptions import ValidationError
from import_export import fields, resources, widgets
from import_export.instance_loaders import ModelInstanceLoader

from customers import selectors, services
from customers.actor import Actor
from customers.errors import ApplicationError
from customers.models import Customer, RegistrationSource

IMPORT_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "date_of_birth",
    "gender",
    "customer_type",
    "company_name",
    "external_id",
    "tags",
    "registration_source",
)
IMPORT_BATCH_ROWS = 500


class EmailInstanceLoader(ModelInstanceLoader):
    """The customer a row names by email, whatever its case."""

    def get_instance(self, row):
        email = str(row.get("email") or "").strip()
        if not email:
            return None
        return selectors.with_email(Customer.objects.all(), email).first()


class CustomerResource(resources.ModelResource):
    tags = fields.Field(attribute="tags", column_name="tags", widget=widgets.SimpleArrayWidget(separator=";"))

    class Meta:
        model = Customer
        fields = IMPORT_FIELDS
        import_id_fields = ("email",)
        instance_loader_class = EmailInstanceLoader
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = False  # the services validate (and normalize) instead
        use_transactions = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._present: tuple[str, ...] = IMPORT_FIELDS

    def before_import(self, dataset, **kwargs):
        headers = {str(header or "").strip() for header in dataset.headers or ()}
        self._present = tuple(name for name in IMPORT_FIELDS if name in headers)

    def _values(self, instance: Customer) -> dict:
        values = {name: getattr(instance, name) for name in self._present}
        for name in ("first_name", "last_name", "company_name", "phone"):
            if name in values and values[name] is None:
                values[name] = ""
        return values

    def validate_instance(self, instance, import_validation_errors=None, validate_unique=True):
        errors = dict(import_validation_errors or {})
        try:
            services.customer_validate_profile(
                {name: value for name, value in self._values(instance).items() if name not in errors},
                customer_id=None if instance._state.adding else instance.pk,
            )
        except ApplicationError as error:
            for name, messages in (error.errors or {"__all__": [error.message]}).items():
                errors.setdefault(name if name in IMPORT_FIELDS else "__all__", []).extend(messages)
        if errors:
            raise ValidationError(errors)

    def save_instance(self, instance, is_create, row, **kwargs):
        if kwargs.get("dry_run"):
            return  # the dry run validates only: no customer numbers used, nothing written
        user = kwargs.get("user")
        actor = Actor.for_staff(user) if user is not None else Actor.system("import")
        values = self._values(instance)
        if is_create:
            values.setdefault("registration_source", RegistrationSource.IMPORT)
            created = services.customer_create(actor=actor, **values)
            instance.pk, instance.customer_number = created.pk, created.customer_number
            instance._state.adding = False
        else:
            services.customer_update(actor=actor, customer_id=instance.pk, changes=values)

    def import_data(self, dataset, dry_run=False, raise_errors=False, use_transactions=None, **kwargs):
        """The dry run in one go; the import itself in batches, each in its own transaction."""
        if dry_run or len(dataset) <= IMPORT_BATCH_ROWS:
            return super().import_data(dataset, dry_run, raise_errors, use_transactions, **kwargs)
        combined = None
        for start in range(0, len(dataset), IMPORT_BATCH_ROWS):
            batch = tablib.Dataset(*dataset[start : start + IMPORT_BATCH_ROWS], headers=dataset.headers)
            result = super().import_data(batch, dry_run, raise_errors, use_transactions, **kwargs)
            combined = result if combined is None else _combine(combined, result, offset=start)
        return combined


def _combine(into, more, *, offset: int):
    into.rows.extend(more.rows)
    for invalid in more.invalid_rows:
        invalid.number += offset
    into.invalid_rows.extend(more.invalid_rows)
    for error in more.error_rows:
        error.number += offset
    into.error_rows.extend(more.error_rows)
    into.base_errors.extend(more.base_errors)
    for kind, count in more.totals.items():
        into.totals[kind] += count
    into.total_rows += more.total_rows
    return into
