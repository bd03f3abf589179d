"""The tier ladder: thresholds, progress, the representation, events, and the set-based recalculation."""

from decimal import Decimal

import pytest
from django.core.cache import cache

from customers import cache as customer_cache
from segments import events as segment_events
from segments import services, tiers
from segments.models import CustomerTier
from tests.segments.conftest import SYSTEM, events_of, make_customer, set_metrics

pytestmark = pytest.mark.django_db


def metrics(total="0", orders=0, aov="0", points=0):
    return {
        "total_spent": Decimal(total),
        "order_count": orders,
        "average_order_value": Decimal(aov),
        "loyalty_points": points,
    }


class TestThresholds:
    @pytest.mark.parametrize(
        ("values", "tier"),
        [
            (metrics(), "regular"),
            (metrics("999.99", 5, "100"), "regular"),
            (metrics("1000", 4, "100"), "regular"),
            (metrics("1000", 5, "99.99"), "regular"),
            (metrics("1000", 5, "100"), "premium"),
            (metrics("10000", 20, "200", 4999), "premium"),
            (metrics("10000", 20, "200", 5000), "vip"),
            (metrics("50000", 100, "500", 0), "enterprise"),  # enterprise does not ask for loyalty points
            (metrics("49999", 100, "500", 9000), "vip"),
        ],
    )
    def test_the_highest_tier_whose_every_threshold_is_met(self, values, tier):
        assert tiers.tier_of(values) == tier

    def test_qualifications_say_which_thresholds_hold(self):
        held = tiers.qualifications(metrics("1500", 3, "500"))
        assert held["premium"] == {"total_spent": True, "order_count": False, "average_order_value": True}
        assert held["vip"]["loyalty_points"] is False
        assert set(held) == {"premium", "vip", "enterprise"}

    def test_thresholds_are_configurable(self, settings):
        settings.SEGMENTS_TIER_THRESHOLDS = {"premium": {"total_spent": 500, "order_count": 2}}
        table = tiers.thresholds()
        assert table["premium"] == {
            "total_spent": Decimal("500"),
            "order_count": Decimal("2"),
            "average_order_value": Decimal("100"),
        }
        assert tiers.tier_of(metrics("500", 2, "100")) == "premium"
        settings.SEGMENTS_TIER_THRESHOLDS = {"platinum": {}}
        with pytest.raises(ValueError, match="unknown tiers"):
            tiers.thresholds()


    def test_thresholds_come_from_the_environment(self):
        """SEGMENTS_TIER_THRESHOLDS (JSON) in the environment reaches the settings and the ladder."""
        import json
        import os
        import subprocess
        import sys
        from pathlib import Path

        code = (
            "import django, json; django.setup(); "
            "from django.conf import settings; from segments import tiers; "
            "print(json.dumps([settings.SEGMENTS_TIER_THRESHOLDS, {t: {k: str(v) for k, v in c.items()} "
            "for t, c in tiers.thresholds().items()}]))"
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "SEGMENTS_TIER_THRESHOLDS": '{"vip": {"loyalty_points": 100, "total_spent": "9000"}}',
        }
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        configured, table = json.loads(done.stdout.strip().splitlines()[-1])
        assert configured == {"vip": {"loyalty_points": 100, "total_spent": "9000"}}
        assert table["vip"] == {
            "total_spent": "9000",
            "order_count": "20",
            "average_order_value": "200",
            "loyalty_points": "100",
        }
        assert table["premium"]["total_spent"] == "1000"

    def test_a_bad_configuration_is_reported_by_the_system_checks(self, settings):
        from segments.apps import check_tier_thresholds

        assert check_tier_thresholds(None) == []
        settings.SEGMENTS_TIER_THRESHOLDS = {"vip": {"lifetime_value": 1}}
        [error] = check_tier_thresholds(None)
        assert error.id == "segments.E001" and "lifetime_value" in error.msg


class TestProgress:
    def test_progress_towards_the_next_tier(self):
        # premium: 1000 spent (50%), 5 orders (2 → 40%), AOV 100 (met → 100%): mean 63.3 → 63
        result = tiers.progress(metrics("500", 2, "250"), "regular")
        assert result == {
            "next_tier": "premium",
            "progress": 63,
            "remaining": "500.00",
            "remaining_by_criterion": {"total_spent": "500.00", "order_count": 3, "average_order_value": "0.00"},
        }

    def test_the_top_tier_has_nothing_left(self):
        assert tiers.progress(metrics("90000", 200, "600"), "enterprise") == {
            "next_tier": None,
            "progress": 100,
            "remaining": "0.00",
            "remaining_by_criterion": {},
        }

    def test_met_thresholds_count_fully(self):
        result = tiers.progress(metrics("20000", 30, "300", 2500), "premium")
        assert result["next_tier"] == "vip" and result["progress"] == 87  # (1 + 1 + 1 + 0.5) / 4
        assert result["remaining"] == "0.00" and result["remaining_by_criterion"]["loyalty_points"] == 2500


class TestRefresh:
    def test_a_tier_change_records_an_event_and_drops_the_cached_customer(self, api):
        customer = make_customer()
        services.customer_tier_refresh(actor=SYSTEM, customer_id=customer.pk)
        api.get(f"/api/v1/customers/{customer.pk}")
        assert cache.get(customer_cache.customer_key(customer.pk)) is not None
        set_metrics(customer, **metrics("12000", 25, "480", 6000))
        from django.db import transaction

        with transaction.atomic():
            assert services.customer_tier_refresh(actor=SYSTEM, customer_id=customer.pk) is True
        state = CustomerTier.objects.get(customer=customer)
        assert state.tier == "vip" and state.qualifications["vip"]["loyalty_points"] is True
        [event] = events_of(segment_events.TIER_CHANGED, customer_id=str(customer.pk))
        assert (event.data["from_tier"], event.data["to_tier"]) == ("regular", "vip")
        assert event.data["qualifications"] == state.qualifications

    def test_no_event_when_the_tier_holds(self):
        customer = make_customer(metrics=metrics("1500", 6, "250"))
        services.customer_tier_refresh(actor=SYSTEM, customer_id=customer.pk)
        reached = CustomerTier.objects.get(customer=customer).reached_at
        set_metrics(customer, total_spent=Decimal("1600"))
        assert services.customer_tier_refresh(actor=SYSTEM, customer_id=customer.pk) is False
        assert CustomerTier.objects.get(customer=customer).reached_at == reached
        assert len(events_of(segment_events.TIER_CHANGED, customer_id=str(customer.pk))) == 1  # None → premium


class TestRepresentation:
    def test_the_customer_shows_tier_and_progress(self, api):
        customer = make_customer(metrics=metrics("1200", 6, "200", 100))
        services.customer_tier_refresh(actor=SYSTEM, customer_id=customer.pk)
        body = api.get(f"/api/v1/customers/{customer.pk}").json()
        assert body["tier"]["tier"] == "premium"
        assert body["tier"]["next_tier"] == "vip"
        assert body["tier"]["remaining"] == "8800.00"
        assert body["tier"]["reached_at"] is not None
        assert body["tier"]["qualifications"]["premium"] == {
            "total_spent": True,
            "order_count": True,
            "average_order_value": True,
        }
        assert api.get(f"/api/v1/customers/{customer.pk}/tier").json() == body["tier"]

    def test_a_customer_not_evaluated_yet_shows_the_tier_of_their_metrics(self, api):
        customer = make_customer(metrics=metrics("1200", 6, "200"))
        body = api.get(f"/api/v1/customers/{customer.pk}/tier").json()
        assert body["tier"] == "premium" and body["reached_at"] is None

    def test_one_query_for_a_page_of_customers(self, api, django_assert_max_num_queries):
        for _ in range(5):
            make_customer()
        with django_assert_max_num_queries(8):  # customers, tiers, two address loaders: never one per customer
            response = api.get("/api/v1/customers?page_size=5")
        assert response.status_code == 200
        assert all(item["tier"]["tier"] == "regular" for item in response.json()["results"])


class TestSetBased:
    def test_every_tier_in_one_statement(self):
        regular = make_customer()
        premium = make_customer(metrics=metrics("1000", 5, "100"))
        vip = make_customer(metrics=metrics("10000", 20, "200", 5000))
        CustomerTier.objects.create(customer=vip, tier="enterprise", qualifications={})
        changed = services.tiers_recalculate(actor=SYSTEM)
        assert changed == 2  # premium (new row, not regular) and vip (was enterprise)
        assert dict(CustomerTier.objects.values_list("customer_id", "tier")) == {
            regular.pk: "regular",
            premium.pk: "premium",
            vip.pk: "vip",
        }
        assert CustomerTier.objects.get(customer=premium).qualifications == tiers.qualifications(
            metrics("1000", 5, "100")
        )
        [down] = events_of(segment_events.TIER_CHANGED, customer_id=str(vip.pk))
        assert (down.data["from_tier"], down.data["to_tier"]) == ("enterprise", "vip")
        [up] = events_of(segment_events.TIER_CHANGED, customer_id=str(premium.pk))
        assert (up.data["from_tier"], up.data["to_tier"]) == (None, "premium")
        assert services.tiers_recalculate(actor=SYSTEM) == 0
