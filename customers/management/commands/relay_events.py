"""`manage.py relay_events`: the outbox relay as its own process (see customers.messaging.relay)."""

import logging
import signal
import threading

from django.core.management.base import BaseCommand

from customers.messaging import relay


class Command(BaseCommand):
    help = "Publish outbox events to the broker, at least once, until stopped (--once: drain and exit)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--poll", type=float, default=None, help="Seconds between polls of an empty outbox")
        parser.add_argument("--broker-url", default=None, help="Default: EVENTS_BROKER_URL")
        parser.add_argument("--exchange", default=None, help="Default: EVENTS_EXCHANGE")
        parser.add_argument("--once", action="store_true", help="Publish what is due, then exit")

    def handle(self, *args, batch_size, poll, broker_url, exchange, once, **options):
        logging.getLogger("customers.messaging").setLevel(logging.INFO)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        publisher = relay.Publisher(url=broker_url, exchange=exchange)
        self.stdout.write(f"relay: publishing to {publisher.exchange.name} (batch {batch_size or 'default'})")
        try:
            result = relay.drain(
                publisher=publisher, batch_size=batch_size, poll_seconds=poll, stop=stop, forever=not once
            )
        finally:
            publisher.close()
        self.stdout.write(f"relay: stopped; published {result.published}, failed {result.failed}")
