"""Give every customer without one an explicit consent state per purpose, and report the share."""

from django.core.management.base import BaseCommand

from consent import selectors, services


class Command(BaseCommand):
    help = (
        "Record an explicit consent state (granted per the current opt-in, else not_requested) for every "
        "customer and purpose that has none, set-based; then print the share of customers with a recorded "
        "state per purpose."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=services.BACKFILL_BATCH_CUSTOMERS, help="Customers per transaction"
        )

    def handle(self, *args, **options):
        written = services.consent_backfill_missing(batch_size=options["batch_size"])
        self.stdout.write(f"Recorded {written} consent state(s).")
        for row in selectors.recorded_state_share():
            self.stdout.write(f"  {row['purpose']:<24} {row['recorded']:>8} / {row['customers']:<8} {row['share']:.1%}")
