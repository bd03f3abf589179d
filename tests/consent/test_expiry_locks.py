"""Expiry takes its locks in the order the preference path does (customer row first), so it never
waits on a preference change in a cycle: a customer held by another transaction is skipped."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from consent import services
from consent.models import ConsentState, ConsentStatus
from customers.actor import Actor
from customers.models import Customer, CustomerPreferences
from tests.factories import CustomerFactory

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]

S = ConsentStatus


def _hold_like_a_preference_change(customer_id, held: threading.Event, release: threading.Event) -> None:
    """What customer_preferences_update holds mid-transaction: the customer row, then its preferences."""
    try:
        with transaction.atomic():
            Customer.objects.select_for_update().get(pk=customer_id)
            CustomerPreferences.objects.select_for_update().get(customer_id=customer_id)
            held.set()
            release.wait(20)
    finally:
        connections.close_all()


def test_a_customer_held_by_a_preference_change_is_skipped_not_waited_on():
    busy = CustomerFactory(preferences={"email_opt_in": True})
    free = CustomerFactory(preferences={"email_opt_in": True})
    ConsentState.objects.filter(customer__in=[busy, free], purpose__code="marketing_email").update(
        valid_until=timezone.now() - timedelta(days=1)
    )
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_like_a_preference_change, args=(busy.pk, held, release))
    holder.start()
    try:
        assert held.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")  # waiting on the holder would fail the run
        started = time.monotonic()
        assert services.consent_expire_due(actor=Actor.system("tests")) == 1
        assert time.monotonic() - started < 3
        states = ConsentState.objects.filter(purpose__code="marketing_email")
        assert states.get(customer=free).status == S.EXPIRED
        assert states.get(customer=busy).status == S.GRANTED  # left for the next run
    finally:
        release.set()
        holder.join(20)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert services.consent_expire_due(actor=Actor.system("tests")) == 1
    assert ConsentState.objects.get(customer=busy, purpose__code="marketing_email").status == S.EXPIRED
    assert CustomerPreferences.objects.get(customer=busy).email_opt_in is False
