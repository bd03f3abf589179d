"""Every customer has an explicit consent state per purpose: at sign-up, or backfilled set-based."""

import importlib
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.db import connection

from consent import selectors, services
from consent.models import ConsentRecord, ConsentState
from customers.models import Customer, CustomerPreferences
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _legacy_customer(n: int, **opt_ins) -> Customer:
    """A customer loaded before consent existed (or by a bulk load that bypasses the services)."""
    customer = Customer.objects.create(email=f"legacy{n}@example.com")
    CustomerPreferences.objects.create(customer=customer, **opt_ins)
    return customer


def _states(customer) -> dict[str, ConsentState]:
    return {s.purpose.code: s for s in ConsentState.objects.filter(customer=customer).select_related("purpose")}


def test_backfill_records_the_current_opt_ins_and_not_requested_for_the_rest():
    opted_in = _legacy_customer(1, email_opt_in=True, analytics_tracking=True)
    silent = _legacy_customer(2)
    erased = _legacy_customer(3)
    Customer.objects.filter(pk=erased.pk).update(status="erased")
    already = CustomerFactory()
    before = ConsentRecord.objects.filter(customer_id=already.pk).count()

    assert services.consent_backfill_missing() == 16

    states = _states(opted_in)
    assert len(states) == 8
    assert states["marketing_email"].status == "granted" and states["marketing_email"].valid_until is not None
    assert states["analytics"].status == "granted"
    assert {states[c].status for c in states if c not in ("marketing_email", "analytics")} == {"not_requested"}
    assert {s.status for s in _states(silent).values()} == {"not_requested"}
    assert _states(erased) == {}
    assert ConsentRecord.objects.filter(customer_id=already.pk).count() == before
    record = states["marketing_email"].last_record
    assert (record.trigger, record.source, record.actor, record.previous_status) == (
        "backfill",
        "import",
        "system:consent_backfill",
        "",
    )
    assert record.policy_version.version == "2025-01"


def test_backfill_is_batched_idempotent_and_brings_the_share_to_100_percent():
    for n in range(5):
        _legacy_customer(n, sms_opt_in=n % 2 == 0)
    assert any(row["share"] < 1 for row in selectors.recorded_state_share())
    assert services.consent_backfill_missing(batch_size=2) == 40
    assert services.consent_backfill_missing(batch_size=2) == 0
    assert {row["share"] for row in selectors.recorded_state_share()} == {1.0}


def test_the_migrations_frozen_copy_does_the_same_in_batches(monkeypatch):
    migration = importlib.import_module("consent.migrations.0005_backfill_existing_customers")
    monkeypatch.setattr(migration, "BATCH_CUSTOMERS", 2)
    customers = [_legacy_customer(n, push_opt_in=n == 0) for n in range(5)]
    migration.backfill(None, SimpleNamespace(connection=connection))
    for customer in customers:
        assert len(_states(customer)) == 8
    assert _states(customers[0])["marketing_push"].status == "granted"
    assert _states(customers[1])["marketing_push"].status == "not_requested"
    with connection.cursor() as cursor:  # the unbatched form changes nothing now
        cursor.execute(migration.BACKFILL_SQL)
        assert cursor.rowcount == 0


def test_the_command_reports_the_share():
    _legacy_customer(1, email_opt_in=True)
    out = StringIO()
    call_command("consent_backfill", stdout=out)
    assert "Recorded 8 consent state(s)." in out.getvalue()
    assert "marketing_email" in out.getvalue() and "100.0%" in out.getvalue()
