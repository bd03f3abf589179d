"""The export document's JSON Schema describes real structure and is checked with formats."""

import copy

import jsonschema
import pytest

from addresses import services as address_services
from customers import activity, notes
from customers.actor import Actor
from privacy import exports, services
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@pytest.fixture
def document():
    customer = CustomerFactory(email="doc@example.com", first_name="Dora")
    address_services.address_create(
        actor=SYSTEM,
        customer_id=customer.pk,
        line1="Unter den Linden 1",
        city="Berlin",
        postal_code="10117",
        country="DE",
        first_name="Dora",
        last_name="X",
    )
    activity.activity_track(actor=SYSTEM, customer_id=customer.pk, activity_type="page_view", summary="home")
    notes.note_create(actor=SYSTEM, customer_id=customer.pk, text="likes tea")
    request, _ = services.privacy_request_file(actor=SYSTEM, customer_id=customer.pk, kind="access")
    built = exports.build_document(request)  # validates
    assert built["data"]["addresses"]["addresses"] and built["data"]["customers"]["notes"]
    assert built["data"]["consent"]["current_state"] and built["data"]["customers"]["activity"]
    return built


def broken(document, change):
    copied = copy.deepcopy(document)
    change(copied)
    return copied


@pytest.mark.parametrize(
    "what, change",
    [
        ("activity is required", lambda d: d["data"]["customers"].pop("activity")),
        ("notes are required", lambda d: d["data"]["customers"].pop("notes")),
        ("an activity row has a type", lambda d: d["data"]["customers"]["activity"][0].pop("type")),
        ("a note has its text", lambda d: d["data"]["customers"]["notes"][0].pop("text")),
        ("an address has line1", lambda d: d["data"]["addresses"]["addresses"][0].pop("line1")),
        ("a country is two letters", lambda d: d["data"]["addresses"]["addresses"][0].update(country="Germany")),
        ("the importer reads deleted_at", lambda d: d["data"]["addresses"]["addresses"][0].pop("deleted_at")),
        ("consent state has its purpose", lambda d: d["data"]["consent"]["current_state"][0].pop("purpose_code")),
        ("consent status is an enum", lambda d: d["data"]["consent"]["current_state"][0].update(status="maybe")),
        ("the consent record is required", lambda d: d["data"]["consent"].pop("record")),
        ("segments say memberships", lambda d: d["data"]["segments"].pop("memberships")),
        ("no unknown addresses part", lambda d: d["data"]["addresses"].update(extra=[])),
        ("profile email is required", lambda d: d["data"]["customers"]["profile"].pop("email")),
        ("date of birth is a date", lambda d: d["data"]["customers"]["profile"].update(date_of_birth="5 June")),
        ("generated_at is a date-time", lambda d: d.update(generated_at="yesterday")),
        ("a date-time has a time zone", lambda d: d.update(generated_at="2026-01-01T10:00:00")),
        ("customer_id is a uuid", lambda d: d.update(customer_id="not-a-uuid")),
        ("history rows carry history columns", lambda d: d["data"]["customers"]["profile_history"][0].clear()),
    ],
)
def test_schema_rejects(document, what, change):
    with pytest.raises(jsonschema.ValidationError):
        exports.validate_document(broken(document, change))


def test_the_schema_itself_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(exports.export_schema())
