from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Consent"

    def ready(self) -> None:
        from consent import services
        from customers import events

        # In the transaction: a marketing opt-in and its consent record never disagree.
        events.subscribe(events.CUSTOMER_CREATED, services.on_customer_created)
        events.subscribe(events.CUSTOMER_PREFERENCES_UPDATED, services.on_preferences_updated)
        # What the opt-in columns read as in the API and the admin: consent, by the rule of
        # selectors.customers_consenting_to (a lapsed or superseded grant reads as off at once).
        from consent.services.sync import opt_ins_as_consented
        from customers.extensions import register_preference_view

        register_preference_view(opt_ins_as_consented)
        # A customer merge carries the merged customer's newer decisions over (records are never moved).
        from consent.services import merge

        merge.subscribe()
        _schedule_beat()


def _schedule_beat() -> None:
    """Add consent's periodic tasks to the project's Celery app (settings' entries win)."""
    from celery import current_app

    from consent.tasks import BEAT_SCHEDULE

    schedule = dict(current_app.conf.beat_schedule or {})
    for name, entry in BEAT_SCHEDULE.items():
        schedule.setdefault(name, entry)
    current_app.conf.beat_schedule = schedule
