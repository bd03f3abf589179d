from django.db import migrations

from customers.roles import COMPLIANCE, grant

PRIVACY_PERMISSIONS = {
    COMPLIANCE: [
        "privacy.view_datasubjectrequest",
        "privacy.change_datasubjectrequest",
        "privacy.view_historicaldatasubjectrequest",
        "privacy.download_export",
        "privacy.approve_erasure",
        "privacy.view_retention_report",
        "privacy.view_erasurelog",
    ],
}


def grant_compliance(apps, schema_editor):
    grant(apps, PRIVACY_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("privacy", "0001_initial"), ("customers", "0002_staff_groups")]

    operations = [migrations.RunPython(grant_compliance, migrations.RunPython.noop)]
