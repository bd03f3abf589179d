"""`manage.py consume_events`: apply other services' events (see customers.messaging.consumer)."""

import logging
import signal
import threading

from django.core.management.base import BaseCommand

from customers.messaging import inbound
from customers.messaging.consumer import APPLY_WORKERS, InboundConsumer


class Command(BaseCommand):
    help = "Consume order, support, identity and loyalty events from the inbound queue, in batches, until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--broker-url", default=None, help="Default: EVENTS_BROKER_URL")
        parser.add_argument("--exchange", default=None, help="Default: EVENTS_INBOUND_EXCHANGE")
        parser.add_argument("--queue", default=None, help="Default: EVENTS_INBOUND_QUEUE")
        parser.add_argument(
            "--routing-key", action="append", dest="routing_keys", help="Bind these keys (default: every handled type)"
        )
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--batch-wait-ms", type=int, default=None)
        parser.add_argument(
            "--workers",
            type=int,
            default=APPLY_WORKERS,
            help=f"Batches applied at once, each on its own database connection (default {APPLY_WORKERS})",
        )
        parser.add_argument(
            "--prefetch",
            type=int,
            default=None,
            help="RabbitMQ: unacknowledged messages sent ahead (default: enough "
            "for every batch in flight and two more)",
        )
        parser.add_argument("--idle-seconds", type=float, default=None, help="Exit after this long without messages")
        parser.add_argument("--max-seconds", type=float, default=None, help="Exit after this long")

    def handle(self, *args, **options):
        logging.getLogger("customers.messaging").setLevel(logging.INFO)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        consumer = InboundConsumer(
            url=options["broker_url"],
            exchange=options["exchange"],
            queue=options["queue"],
            routing_keys=options["routing_keys"] or inbound.HANDLED_TYPES,
            batch_size=options["batch_size"],
            batch_wait_ms=options["batch_wait_ms"],
            workers=options["workers"],
            prefetch=options["prefetch"],
        )
        self.stdout.write(
            f"consumer: reading {consumer.queue.name} in batches of {consumer.batch_size}, "
            f"{consumer.workers} apply worker(s), prefetch {consumer.prefetch}"
        )
        stats = consumer.run(stop, idle_seconds=options["idle_seconds"], max_seconds=options["max_seconds"])
        self.stdout.write(
            f"consumer: stopped; received {stats.received}, applied {stats.applied}, "
            f"duplicates {stats.duplicates}, parked {stats.parked}"
        )
