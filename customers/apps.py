from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "customers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from customers import history, roles, schema  # noqa: F401  (schema registers an extension)

        history.connect_actor_stamping()
        history.reuse_history_manager_classes()
        roles.connect_administrator_sync()

        from customers import activity

        activity.connect_event_activity()

        from customers import duplicates

        duplicates.connect_address_events()
