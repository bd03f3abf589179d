"""The staff groups and exactly which permissions each holds.

A data migration creates them; later apps extend `GROUP_PERMISSIONS` through their own data
migrations. The Administrator group holds every permission, re-synced after each migrate so new
models are covered.
"""

from django.db.models.signals import post_migrate

CUSTOMER_SERVICE = "Customer service"
COMPLIANCE = "Compliance"
MARKETING = "Marketing"
ADMINISTRATOR = "Administrator"

GROUP_PERMISSIONS = {
    CUSTOMER_SERVICE: [
        "customers.view_customer",
        "customers.change_customer",
        "customers.view_customerpreferences",
        "customers.change_customerpreferences",
        "customers.view_historicalcustomer",
        "customers.view_historicalcustomerpreferences",
        "customers.view_customerstatuschange",
    ],
    COMPLIANCE: [
        "customers.view_customer",
        "customers.view_customerpreferences",
        "customers.view_historicalcustomer",
        "customers.view_historicalcustomerpreferences",
        "customers.view_customerstatuschange",
    ],
    MARKETING: [
        "customers.view_customer",
        "customers.view_customerpreferences",
    ],
}


def grant(apps, group_permissions: dict[str, list[str]]) -> None:
    """Give each group its permissions (creating groups and permissions as needed); for migrations."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in group_permissions.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        for dotted in codenames:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def _sync_administrator(sender, using="default", **kwargs) -> None:
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.using(using).get_or_create(name=ADMINISTRATOR)
    group.permissions.set(Permission.objects.using(using).all())


def connect_administrator_sync() -> None:
    post_migrate.connect(_sync_administrator, dispatch_uid="customers.roles.sync_administrator")
