"""Possible duplicates are detected on create and on changes, listed for review, never merged."""

import pytest
from django.db.models import F

from customers import services
from customers.actor import Actor
from customers.duplicates import canonical_email, duplicates_detect, open_duplicates_of
from customers.models import CanonicalEmail, Customer, DuplicateCandidate
from customers.roles import CUSTOMER_SERVICE
from tests.addresses.factories import make_address
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def pairs():
    return {
        (frozenset({c.customer_id, c.other_id}), tuple(c.reasons), c.status) for c in DuplicateCandidate.objects.all()
    }


@pytest.mark.parametrize(
    ("email", "canonical"),
    [
        ("Ann.Lee+shop@Gmail.com", "annlee@gmail.com"),
        ("ann.lee@googlemail.com", "annlee@gmail.com"),
        ("ann.lee+x@outlook.com", "ann.lee@outlook.com"),
        ("ann.lee+x@example.com", "ann.lee+x@example.com"),
        ("a.b@web.de", "a.b@web.de"),
    ],
)
def test_python_and_sql_agree_on_the_mailbox(email, canonical):
    assert canonical_email(email) == canonical
    customer = CustomerFactory(email=email)
    sql = Customer.objects.annotate(key=CanonicalEmail(F("email"))).get(pk=customer.pk).key
    assert sql == canonical


def test_same_phone_in_any_format_is_a_candidate_on_create():
    ann = CustomerFactory(email="ann@example.com", phone="+1 415-555-2671")
    other = CustomerFactory(email="a.lee@example.org", phone="(+1) 415 555 2671")
    assert pairs() == {(frozenset({ann.pk, other.pk}), ("phone",), "open")}
    assert Customer.objects.count() == 2  # listed, never merged


def test_same_gmail_mailbox_ignoring_dots_and_tags():
    ann = CustomerFactory(email="ann.lee@gmail.com")
    CustomerFactory(email="ann.lee@example.com")  # another provider: different people may share the name
    tagged = CustomerFactory(email="annlee+newsletter@gmail.com")
    assert pairs() == {(frozenset({ann.pk, tagged.pk}), ("email",), "open")}


def test_update_of_email_or_phone_detects_and_adds_reasons():
    ann = CustomerFactory(email="ann.lee@gmail.com", phone="+14155552671")
    bob = CustomerFactory(email="bob@example.com")
    assert not DuplicateCandidate.objects.exists()
    services.customer_update(actor=SYSTEM, customer_id=bob.pk, changes={"phone": "+1 415 555 2671"})
    services.customer_update(actor=SYSTEM, customer_id=bob.pk, changes={"email": "a.n.n.lee+x@gmail.com"})
    assert pairs() == {(frozenset({ann.pk, bob.pk}), ("email", "phone"), "open")}
    services.customer_update(actor=SYSTEM, customer_id=bob.pk, changes={"tags": ["vip"]})  # unwatched: no query
    assert DuplicateCandidate.objects.count() == 1


def test_same_name_and_postal_code_through_the_address_book():
    ann = CustomerFactory(email="ann@example.com", first_name="Ann", last_name="Lee")
    make_address(ann, country="DE", postal_code="10117")
    twin = CustomerFactory(email="ann.l@example.org", first_name="ANN", last_name="lee")
    assert not DuplicateCandidate.objects.exists()  # no address yet
    make_address(twin, country="DE", postal_code="10117")
    assert pairs() == {(frozenset({ann.pk, twin.pk}), ("name_postal_code",), "open")}
    namesake = CustomerFactory(email="ann3@example.org", first_name="Ann", last_name="Lee")
    make_address(namesake, country="DE", postal_code="80331")  # elsewhere
    assert DuplicateCandidate.objects.count() == 1


def test_a_dismissed_pair_stays_dismissed_and_gone_customers_are_ignored(staff):
    ann = CustomerFactory(email="ann@example.com", phone="+14155552671")
    bob = CustomerFactory(email="bob@example.com", phone="+14155552671")
    candidate = open_duplicates_of(ann.pk).get()
    services.duplicate_dismiss(actor=Actor.for_staff(staff(CUSTOMER_SERVICE)), candidate_id=candidate.pk)
    duplicates_detect(customer_id=bob.pk)
    candidate.refresh_from_db()
    assert candidate.status == "dismissed" and candidate.resolved_by == "staff:customer_service"
    assert not open_duplicates_of(ann.pk).exists()
    services.erase_customers_data([ann.pk])
    assert not DuplicateCandidate.objects.exists()  # erasure deletes the pairs
    carl = CustomerFactory(email="carl@example.com", phone="+14155552671")
    assert pairs() == {(frozenset({bob.pk, carl.pk}), ("phone",), "open")}
