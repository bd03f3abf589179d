from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from consent import services
from consent.models import ConsentPurpose, ConsentState, PolicyVersion
from customers.actor import Actor
from customers.roles import COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from tests.factories import CustomerFactory

MARKETING_PURPOSES = ("marketing_email", "marketing_sms", "marketing_push", "marketing_direct_mail")
TOKEN = Actor(kind="token", subject="storefront", scopes=frozenset({"customers:read", "customers:write"}))


@pytest.fixture
def customer(db):
    return CustomerFactory()


@pytest.fixture
def other_customer(db):
    return CustomerFactory()


@pytest.fixture
def token_actor() -> Actor:
    return TOKEN


def state_of(customer, code: str) -> ConsentState:
    return ConsentState.objects.select_related("policy_version").get(customer=customer, purpose__code=code)


def change(customer, code: str, status: str, *, actor: Actor = TOKEN, **kwargs) -> ConsentState:
    kwargs.setdefault("source", "web")
    return services.consent_change(actor=actor, customer_id=customer.pk, purpose_code=code, status=status, **kwargs)


def expire_all(now=None) -> int:
    """Run expiry as if the clock were ten years on (every grant with a validity is past it)."""
    return services.consent_expire_due(actor=Actor.system("tests"), now=now or timezone.now() + timedelta(days=3650))


def new_version(code: str, label: str, *, days_ago: float = 0, requires_reconsent: bool = False) -> PolicyVersion:
    purpose = ConsentPurpose.objects.get(code=code)
    return services.policy_version_create(
        actor=Actor.system("tests"),
        purpose_id=purpose.pk,
        version=label,
        notice_text=f"Notice {label} for {code}",
        effective_at=timezone.now() - timedelta(days=days_ago),
        requires_reconsent=requires_reconsent,
    )


@pytest.fixture
def staff(db):
    """`staff(group_name, username=None)` → a staff user in that group."""

    def make(group: str, username: str | None = None):
        user = get_user_model().objects.create_user(
            username=username or group.lower().replace(" ", "_"), password="pw-123456-long", is_staff=True
        )
        user.groups.add(Group.objects.get(name=group))
        return user

    return make


@pytest.fixture
def compliance_user(staff):
    return staff(COMPLIANCE)


@pytest.fixture
def rep_user(staff):
    return staff(CUSTOMER_SERVICE)


@pytest.fixture
def marketing_user(staff):
    return staff(MARKETING)


@pytest.fixture(scope="module")
def migrated_data_restored(django_db_setup, django_db_blocker):
    """For modules of transactional tests: put back the data the migrations wrote (purposes, policy
    versions, staff groups) once the module is done, since a transactional test ends with a flush.
    """
    from django.db import connection

    yield
    with django_db_blocker.unblock():
        snapshot = getattr(connection, "_test_serialized_contents", None)
        if snapshot is not None:
            connection.creation.deserialize_db_from_string(snapshot)
