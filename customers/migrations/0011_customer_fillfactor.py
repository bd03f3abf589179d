from django.db import migrations


class Migration(migrations.Migration):
    """Room on each page for a new row version: metrics updates (no indexed column changes) become HOT
    updates, which skip the customer table's many indexes (five trigram GIN indexes among them)."""

    dependencies = [("customers", "0010_outbox_backoff_index")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE customers_customer SET (fillfactor = 80)",
            "ALTER TABLE customers_customer RESET (fillfactor)",
        )
    ]
