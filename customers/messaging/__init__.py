"""Events in and out of the service.

- `schemas`: the versioned JSON Schema of every event type (`<app>/event_schemas/<type>.json`),
  a fast validator compiled from them, the personal-data flags, the compatibility rule.
- `broker`: kombu connections, exchanges and queues from settings (Redis or RabbitMQ by URL).
- `relay`: publishes outbox rows to the `customer.events` topic exchange, at least once.
- `consumer`: drains the inbound queue in batches, one transaction per batch, ack after commit.
- `inbound`: what each inbound event does, set-based per batch, deduplicated in the inbox.
"""
