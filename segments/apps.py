from django.apps import AppConfig


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
        from segments import merge

        merge.subscribe()  # a customer merge moves static memberships and re-evaluates both customers
        # GET /customers/{id} shows the tier; customers never imports segments.
        register_representation_field(
            RepresentationField(name="tier", make_field=_tier_field, load=selectors.customer_tiers)
        )
