from uuid import UUID

from django.core.management.base import BaseCommand, CommandError

from customers.actor import ALL_SCOPES
from customers.auth import issue_token


class Command(BaseCommand):
    help = "Print a signed API token (for services and tests until a login service issues them)."

    def add_arguments(self, parser):
        parser.add_argument("--scope", required=True, help='Space-separated, e.g. "customers:read customers:write"')
        parser.add_argument("--customer", help="Limit the token to this customer id")
        parser.add_argument("--ttl", type=int, default=3600, help="Seconds until it expires (default 3600)")
        parser.add_argument("--subject", default="cli", help="Who the token stands for (recorded on changes)")

    def handle(self, *args, scope, customer, ttl, subject, **options):
        scopes = scope.split()
        unknown = [name for name in scopes if name not in ALL_SCOPES]
        if unknown:
            raise CommandError(f"Unknown scope(s) {unknown}; known: {', '.join(ALL_SCOPES)}")
        if ttl <= 0:
            raise CommandError("--ttl must be positive")
        customer_id = None
        if customer:
            try:
                customer_id = UUID(customer)
            except ValueError:
                raise CommandError("--customer must be a UUID") from None
        self.stdout.write(issue_token(scopes=scopes, subject=subject, customer_id=customer_id, ttl_seconds=ttl))
