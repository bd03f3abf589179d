from django.apps import AppConfig
from django.core import checks


def check_tier_thresholds(app_configs, **kwargs) -> list:
    """SEGMENTS_TIER_THRESHOLDS (from the environment) names known tiers and criteria, with numbers."""
    from segments import tiers

    try:
        tiers.thresholds()
    except (ValueError, TypeError, ArithmeticError, AttributeError) as error:
        return [checks.Error(f"SEGMENTS_TIER_THRESHOLDS is invalid: {error}", id="segments.E001")]
    return []


def _tier_field():
    from segments.api import TierSerializer

    return TierSerializer(read_only=True, allow_null=True)


class SegmentsConfig(AppConfig):
    name = "segments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from customers.extensions import RepresentationField, register_representation_field
        from segments import selectors, subscribers

        subscribers.subscribe_all()
        checks.register(check_tier_thresholds)
        from segments import merge

        merge.subscribe()  # a customer merge moves static memberships and re-evaluates both customers
        # GET /customers/{id} shows the tier; customers never imports segments.
        register_representation_field(
            RepresentationField(name="tier", make_field=_tier_field, load=selectors.customer_tiers)
        )
