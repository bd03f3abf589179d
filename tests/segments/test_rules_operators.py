"""Every operator and field compiles to SQL that selects exactly the right customers."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db.models import Q
from django.utils import timezone

from addresses import services as address_services
from customers import services as customer_services
from customers.models import Customer
from segments import selectors
from segments.models import SegmentMembership
from segments.rules import compile_rules, parse_rules
from segments.rules.fields import AgeField
from tests.addresses.factories import make_address
from tests.segments.conftest import SYSTEM, add_orders, grant, make_customer, make_segment, matching, revoke

pytestmark = pytest.mark.django_db


def rule(field, op, value=None, **extra):
    node = {"field": field, "op": op, **extra}
    if value is not None:
        node["value"] = value
    return node


@pytest.fixture
def people():
    """Five customers with distinct metrics and profiles."""
    now = timezone.now()
    ann = make_customer(
        email="ann@example.com",
        gender="female",
        tags=["vip", "newsletter"],
        custom_attributes={"plan": "gold", "seats": 12, "beta": True, "nick": "Annie"},
        metrics={
            "order_count": 12,
            "total_spent": Decimal("2400.00"),
            "average_order_value": Decimal("200.00"),
            "last_order_at": now - timedelta(days=5),
            "loyalty_points": 900,
            "satisfaction_score": Decimal("4.50"),
            "last_activity_at": now - timedelta(days=1),
        },
    )
    bob = make_customer(
        email="bob@example.com",
        gender="male",
        customer_type="business",
        company_name="Bob & Co",
        registration_source="mobile",
        tags=["newsletter"],
        custom_attributes={"plan": "silver", "seats": 3},
        metrics={
            "order_count": 3,
            "total_spent": Decimal("150.00"),
            "average_order_value": Decimal("50.00"),
            "last_order_at": now - timedelta(days=120),
            "loyalty_points": 50,
        },
    )
    cid = make_customer(email="cid@example.com", gender="male", custom_attributes={"seats": "many"})
    dee = make_customer(
        email="dee@example.com",
        gender="female",
        registered_at=now - timedelta(days=400),
        metrics={"order_count": 1, "total_spent": Decimal("99.99"), "average_order_value": Decimal("99.99")},
    )
    eve = make_customer(email="eve@example.com", gender="other", custom_attributes={"plan": None})
    return {"ann": ann, "bob": bob, "cid": cid, "dee": dee, "eve": eve}


def ids(people, *names):
    return {people[name].pk for name in names}


class TestNumberFields:
    @pytest.mark.parametrize(
        ("op", "value", "expected"),
        [
            ("eq", 3, ["bob"]),
            ("neq", 3, ["ann", "cid", "dee", "eve"]),
            ("gt", 3, ["ann"]),
            ("gte", 3, ["ann", "bob"]),
            ("lt", 3, ["cid", "dee", "eve"]),
            ("lte", 3, ["bob", "cid", "dee", "eve"]),
            ("between", [1, 3], ["bob", "dee"]),
            ("in", [1, 12], ["ann", "dee"]),
            ("not_in", [1, 12], ["bob", "cid", "eve"]),
        ],
    )
    def test_order_count(self, people, op, value, expected):
        assert matching(rule("order_count", op, value)) == ids(people, *expected)

    def test_decimals_accept_numbers_and_numeric_strings(self, people):
        assert matching(rule("total_spent", "gte", "1000")) == ids(people, "ann")
        assert matching(rule("average_order_value", "between", [50, 100])) == ids(people, "bob", "dee")
        assert matching(rule("loyalty_points", "gt", 100)) == ids(people, "ann")

    def test_nullable_number_has_exists_and_missing_and_neq_includes_missing(self, people):
        assert matching(rule("satisfaction_score", "exists")) == ids(people, "ann")
        assert matching(rule("satisfaction_score", "missing")) == ids(people, "bob", "cid", "dee", "eve")
        assert matching(rule("satisfaction_score", "neq", 4.5)) == ids(people, "bob", "cid", "dee", "eve")
        assert matching(rule("satisfaction_score", "lt", 5)) == ids(people, "ann")


class TestDateTimeFields:
    def test_recency(self, people):
        assert matching(rule("last_order_at", "within_last_days", 30)) == ids(people, "ann")
        assert matching(rule("last_order_at", "more_than_days_ago", 90)) == ids(people, "bob")
        assert matching(rule("last_order_at", "missing")) == ids(people, "cid", "dee", "eve")
        assert matching(rule("last_order_at", "exists")) == ids(people, "ann", "bob")
        assert matching(rule("registered_at", "more_than_days_ago", 300)) == ids(people, "dee")
        assert matching(rule("last_activity_at", "within_last_days", 2)) == ids(people, "ann")

    def test_absolute_comparisons_take_dates_and_datetimes(self, people):
        cutoff = (timezone.now() - timedelta(days=60)).date().isoformat()
        assert matching(rule("last_order_at", "gt", cutoff)) == ids(people, "ann")
        assert matching(rule("last_order_at", "lte", cutoff + "T00:00:00Z")) == ids(people, "bob")
        start = (timezone.now() - timedelta(days=200)).isoformat()
        end = (timezone.now() - timedelta(days=100)).isoformat()
        assert matching(rule("last_order_at", "between", [start, end])) == ids(people, "bob")
        assert matching(rule("registered_at", "lt", cutoff)) == ids(people, "dee")
        assert matching(rule("registered_at", "gte", cutoff)) == ids(people, "ann", "bob", "cid", "eve")


class TestAge:
    @pytest.fixture
    def born(self):
        today = timezone.now().date()

        def make(email, years, days=0):
            dob = AgeField._years_before(today, years) - timedelta(days=days) if years is not None else None
            return make_customer(email=email, date_of_birth=dob)

        return {
            "exactly_30": make("a30@example.com", 30),  # 30th birthday today
            "almost_30": make("a29@example.com", 30, days=-1),  # 30 tomorrow: still 29
            "just_40": make("a40@example.com", 40, days=3),
            "unknown": make("ax@example.com", None),
        }

    @pytest.mark.parametrize(
        ("op", "value", "expected"),
        [
            ("eq", 30, ["exactly_30"]),
            ("eq", 29, ["almost_30"]),
            ("gte", 30, ["exactly_30", "just_40"]),
            ("gt", 30, ["just_40"]),
            ("lt", 30, ["almost_30"]),
            ("lte", 30, ["exactly_30", "almost_30"]),
            ("between", [29, 35], ["exactly_30", "almost_30"]),
            ("in", [29, 40], ["almost_30", "just_40"]),
            ("not_in", [29, 40], ["exactly_30", "unknown"]),
            ("neq", 30, ["almost_30", "just_40", "unknown"]),
            ("exists", None, ["exactly_30", "almost_30", "just_40"]),
            ("missing", None, ["unknown"]),
        ],
    )
    def test_age_from_date_of_birth(self, born, op, value, expected):
        assert matching(rule("age", op, value)) == {born[name].pk for name in expected}

    def test_leap_day_birthdays(self):
        assert AgeField._years_before(date(2028, 2, 29), 1) == date(2027, 2, 28)


class TestChoiceAndTextFields:
    def test_enums(self, people):
        assert matching(rule("gender", "eq", "female")) == ids(people, "ann", "dee")
        assert matching(rule("gender", "neq", "female")) == ids(people, "bob", "cid", "eve")
        assert matching(rule("gender", "in", ["other", "male"])) == ids(people, "bob", "cid", "eve")
        assert matching(rule("customer_type", "eq", "business")) == ids(people, "bob")
        assert matching(rule("registration_source", "not_in", ["web"])) == ids(people, "bob")
        assert matching(rule("status", "eq", "active")) == ids(people, *people)

    def test_language_is_case_insensitive(self, people):
        customer_services.customer_preferences_update(
            actor=SYSTEM, customer_id=people["ann"].pk, changes={"language": "de-DE"}
        )
        customer_services.customer_preferences_update(
            actor=SYSTEM, customer_id=people["bob"].pk, changes={"language": "de-AT"}
        )
        assert matching(rule("language", "eq", "DE-de")) == ids(people, "ann")
        assert matching(rule("language", "starts_with", "de")) == ids(people, "ann", "bob")
        assert matching(rule("language", "contains", "-a")) == ids(people, "bob")
        assert matching(rule("language", "not_contains", "de")) == ids(people, "cid", "dee", "eve")
        assert matching(rule("language", "in", ["de-at", "fr"])) == ids(people, "bob")
        assert matching(rule("language", "not_in", ["en"])) == ids(people, "ann", "bob")
        assert matching(rule("language", "neq", "en")) == ids(people, "ann", "bob")
        assert matching(rule("language", "exists")) == ids(people, *people)

    def test_tags(self, people):
        assert matching(rule("tags", "contains", "vip")) == ids(people, "ann")
        assert matching(rule("tags", "not_contains", "vip")) == ids(people, "bob", "cid", "dee", "eve")
        assert matching(rule("tags", "in", ["vip", "newsletter"])) == ids(people, "ann", "bob")
        assert matching(rule("tags", "not_in", ["vip", "newsletter"])) == ids(people, "cid", "dee", "eve")
        assert matching(rule("tags", "exists")) == ids(people, "ann", "bob")
        assert matching(rule("tags", "missing")) == ids(people, "cid", "dee", "eve")


class TestAddressFields:
    @pytest.fixture
    def located(self, people):
        make_address(people["ann"], country="DE")  # first shipping address: the default
        make_address(people["bob"], country="FR")
        make_address(people["bob"], country="DE")  # not the default
        billing_only = make_address(people["cid"], country="DE", type="billing")
        return billing_only

    def test_country_and_city_of_the_default_shipping_address(self, people, located):
        assert matching(rule("country", "eq", "de")) == ids(people, "ann")
        assert matching(rule("country", "neq", "DE")) == ids(people, "bob", "cid", "dee", "eve")
        assert matching(rule("country", "in", ["FR", "DE"])) == ids(people, "ann", "bob")
        assert matching(rule("country", "not_in", ["FR"])) == ids(people, "ann", "cid", "dee", "eve")
        assert matching(rule("country", "exists")) == ids(people, "ann", "bob")
        assert matching(rule("country", "missing")) == ids(people, "cid", "dee", "eve")
        assert matching(rule("city", "eq", "berlin")) == ids(people, "ann")
        assert matching(rule("city", "starts_with", "Par")) == ids(people, "bob")
        assert matching(rule("city", "contains", "erl")) == ids(people, "ann")
        assert matching(rule("city", "not_contains", "erl")) == ids(people, "bob", "cid", "dee", "eve")

    def test_a_deleted_default_no_longer_counts(self, people, located):
        address = people["ann"].addresses.get()
        address_services.address_delete(actor=SYSTEM, customer_id=people["ann"].pk, address_id=address.pk)
        assert matching(rule("country", "eq", "DE")) == set()


class TestConsentAndMembership:
    def test_consent(self, people):
        grant(people["ann"])
        grant(people["bob"])
        grant(people["bob"], "marketing_sms")
        revoke(people["bob"])
        assert matching(rule("consent", "contains", "marketing_email")) == ids(people, "ann")
        assert matching(rule("consent", "not_contains", "marketing_email")) == ids(people, "bob", "cid", "dee", "eve")
        assert matching(rule("consent", "in", ["marketing_email", "marketing_sms"])) == ids(people, "ann", "bob")
        assert matching(rule("consent", "not_in", ["marketing_email", "marketing_sms"])) == ids(
            people, "cid", "dee", "eve"
        )
        for op in ("contains", "not_contains"):
            condition = rule("consent", op, "marketing_email")
            assert per_customer(condition) == matching(condition)

    def test_membership(self, people):
        static = make_segment(code="hand_picked")
        other = make_segment(code="other_list")
        from segments import services

        services.segment_members_add(actor=SYSTEM, segment_id=static.pk, customer_ids=[people["ann"].pk])
        services.segment_members_add(actor=SYSTEM, segment_id=other.pk, customer_ids=[people["bob"].pk])
        services.segment_members_remove(actor=SYSTEM, segment_id=other.pk, customer_ids=[people["bob"].pk])
        assert matching(rule("segments", "contains", "hand_picked")) == ids(people, "ann")
        assert matching(rule("segments", "in", ["hand_picked", "other_list"])) == ids(people, "ann")
        assert matching(rule("segments", "not_contains", "hand_picked")) == ids(people, "bob", "cid", "dee", "eve")
        assert matching(rule("segments", "not_in", ["hand_picked"])) == ids(people, "bob", "cid", "dee", "eve")
        assert SegmentMembership.objects.filter(segment=other).count() == 1  # closed, kept as history


def per_customer(rules) -> set:
    """The same rules compiled as per-customer evaluation compiles them (correlated subqueries)."""
    condition, _ = selectors.membership_condition(parse_rules(rules), correlated=True)
    flags = selectors.eligible_customers().annotate(member=condition).values_list("pk", "member")
    return {pk for pk, member in flags if member}


class TestRecentOrders:
    def test_orders_in_the_last_days_count_open_and_completed_only(self, people):
        add_orders(people["ann"], 10, days_ago=10)
        add_orders(people["ann"], 5, days_ago=400)
        add_orders(people["bob"], 9, days_ago=20)
        add_orders(people["bob"], 3, days_ago=20, status="cancelled")
        add_orders(people["cid"], 1, days_ago=5, status="open")
        assert matching(rule("orders_last_180_days", "gte", 10)) == ids(people, "ann")
        assert matching(rule("orders_last_180_days", "lt", 2)) == ids(people, "cid", "dee", "eve")
        assert matching(rule("orders_last_180_days", "eq", 0)) == ids(people, "dee", "eve")
        assert matching(rule("orders_last_180_days", "neq", 9)) == ids(people, "ann", "cid", "dee", "eve")
        assert matching(rule("orders_last_180_days", "between", [0, 1])) == ids(people, "cid", "dee", "eve")
        assert matching(rule("orders_last_180_days", "in", [1, 9])) == ids(people, "bob", "cid")
        assert matching(rule("orders_last_180_days", "not_in", [0, 9])) == ids(people, "ann", "cid")
        assert matching(rule("orders_last_500_days", "gt", 12)) == ids(people, "ann")
        assert matching(rule("orders_last_7_days", "eq", 1)) == ids(people, "cid")
        for op, value in [("gte", 10), ("lt", 2), ("eq", 0), ("neq", 9), ("between", [0, 1]), ("not_in", [0, 9])]:
            condition = rule("orders_last_180_days", op, value)
            assert per_customer(condition) == matching(condition), (op, value)


class TestCustomAttributes:
    @pytest.mark.parametrize(
        ("op", "value", "expected"),
        [
            ("eq", "gold", ["ann"]),
            ("neq", "gold", ["bob", "cid", "dee", "eve"]),
            ("in", ["gold", "silver"], ["ann", "bob"]),
            ("not_in", ["gold"], ["bob", "cid", "dee", "eve"]),
            ("contains", "OL", ["ann"]),
            ("not_contains", "ol", ["bob", "cid", "dee", "eve"]),
            ("starts_with", "sil", ["bob"]),
            ("exists", None, ["ann", "bob"]),
            ("missing", None, ["cid", "dee", "eve"]),  # eve's plan is JSON null
        ],
    )
    def test_text_attribute(self, people, op, value, expected):
        assert matching(rule("custom_attributes.plan", op, value)) == ids(people, *expected)

    def test_numbers_compare_numerically_and_ignore_other_types(self, people):
        assert matching(rule("custom_attributes.seats", "gt", 5)) == ids(people, "ann")
        assert matching(rule("custom_attributes.seats", "lte", 12)) == ids(people, "ann", "bob")
        assert matching(rule("custom_attributes.seats", "between", [3, 3])) == ids(people, "bob")
        assert matching(rule("custom_attributes.seats", "eq", 12)) == ids(people, "ann")
        assert matching(rule("custom_attributes.seats", "eq", "many")) == ids(people, "cid")
        assert matching({"not": rule("custom_attributes.seats", "gt", 5)}) == ids(people, "bob", "cid", "dee", "eve")

    def test_booleans(self, people):
        assert matching(rule("custom_attributes.beta", "eq", True)) == ids(people, "ann")
        assert matching(rule("custom_attributes.beta", "neq", True)) == ids(people, "bob", "cid", "dee", "eve")


class TestTreesAndScores:
    def test_nesting(self, people):
        rules = {
            "any": [
                {"all": [rule("gender", "eq", "female"), rule("order_count", "gte", 1)]},
                {"all": [rule("customer_type", "eq", "business"), {"not": rule("tags", "contains", "vip")}]},
            ]
        }
        assert matching(rules) == ids(people, "ann", "bob", "dee")
        assert matching({"not": rules}) == ids(people, "cid", "eve")

    @pytest.mark.parametrize(
        "condition",
        [
            rule("satisfaction_score", "gt", 4),
            rule("age", "gt", 10),
            rule("country", "eq", "DE"),
            rule("custom_attributes.plan", "eq", "gold"),
            rule("language", "contains", "e"),
            rule("last_order_at", "within_last_days", 10),
            rule("orders_last_30_days", "gte", 1),
        ],
    )
    def test_not_is_the_exact_complement(self, people, condition):
        everyone = set(Customer.objects.values_list("pk", flat=True))
        selected, rest = matching(condition), matching({"not": condition})
        assert selected | rest == everyone and not selected & rest

    def test_weights_add_up_to_the_score(self, people):
        rules = {
            "any": [
                rule("order_count", "gte", 10, weight=5),
                rule("tags", "contains", "newsletter", weight=2.5),
                rule("gender", "eq", "male", weight=-1),
            ]
        }
        scores = dict(selectors.matching_customers(rules).values_list("id", "segment_score"))
        assert scores == {
            people["ann"].pk: Decimal("7.50"),
            people["bob"].pk: Decimal("1.50"),
            people["cid"].pk: Decimal("-1.00"),
        }

    def test_one_sql_query_per_tree(self, people, django_assert_num_queries):
        parsed = parse_rules(
            {"all": [rule("order_count", "gt", 1), {"any": [rule("country", "eq", "DE"), rule("tags", "exists")]}]}
        )
        ctx = selectors.rules_context(parsed)
        compiled = compile_rules(parsed, ctx)
        with django_assert_num_queries(1):
            list(Customer.objects.filter(compiled.condition).annotate(s=compiled.score).values_list("pk", "s"))

    def test_erased_and_restricted_customers_are_never_selected(self, people):
        Customer.objects.filter(pk=people["ann"].pk).update(status="erased")
        customer_services.customer_set_processing_restriction(
            actor=SYSTEM, customer_id=people["bob"].pk, restricted=True, reason="Art. 18 request"
        )
        assert matching(rule("order_count", "gte", 0)) == ids(people, "cid", "dee", "eve")
        assert not selectors.eligible_customers().filter(Q(pk=people["ann"].pk) | Q(pk=people["bob"].pk)).exists()
