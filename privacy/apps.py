from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "privacy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from privacy import subscribers

        # customer.erasure_requested.v1 (e.g. the identity service deleted the user) files an erasure request.
        subscribers.subscribe_all()
