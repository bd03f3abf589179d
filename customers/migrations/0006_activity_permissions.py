from django.db import migrations

from customers.roles import COMPLIANCE, CUSTOMER_SERVICE, grant

# Reps and compliance see the timeline; outbox and dead letters (raw payloads) stay with administrators.
EVENT_PERMISSIONS = {
    CUSTOMER_SERVICE: ["customers.view_customeractivity"],
    COMPLIANCE: ["customers.view_customeractivity"],
}


def grant_activity_permissions(apps, schema_editor):
    grant(apps, EVENT_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("customers", "0005_events_inbox_activity")]

    operations = [migrations.RunPython(grant_activity_permissions, migrations.RunPython.noop)]
