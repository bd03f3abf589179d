"""Compliance edits purposes and policy versions and exports the record; reps and marketing read."""

from django.db import migrations

from customers.roles import COMPLIANCE, CUSTOMER_SERVICE, MARKETING, grant

READ = [
    "consent.view_consentpurpose",
    "consent.view_policyversion",
    "consent.view_consentrecord",
    "consent.view_consentstate",
]
GROUP_PERMISSIONS = {
    COMPLIANCE: [
        *READ,
        "consent.add_consentpurpose",
        "consent.change_consentpurpose",
        "consent.add_policyversion",
        "consent.change_policyversion",
        "consent.view_historicalconsentpurpose",
        "consent.view_historicalpolicyversion",
        "consent.export_consentrecord",
    ],
    CUSTOMER_SERVICE: READ,
    MARKETING: READ,
}


def create_groups(apps, schema_editor):
    grant(apps, GROUP_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0003_seed_purposes"),
        ("customers", "0002_staff_groups"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
