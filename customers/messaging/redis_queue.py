"""Our own receive path for the inbound queue on Redis: a batch per round trip, and no message lost.

kombu's Redis transport pops one message per round trip (BRPOP) and files it as unacknowledged in a
second one, so a consumer killed between the two loses that message. Here a Lua script moves up to a
batch of messages, atomically, from the queue's lists (the ones kombu's publishers push to: the
queue's name, and `<queue>\\x06\\x16<priority>` for prioritised messages) into a *processing list* of
this consumer's batch, and files that list under the consumer, in the same script. After the batch's
transaction committed, the list is deleted (the acknowledgement). A message is therefore always in
the queue or in a processing list.

Each consumer has a random id and a heartbeat key that a thread refreshes; its expiry
(`EVENTS_REDIS_VISIBILITY_TIMEOUT`) means the consumer is gone. Every consumer, when it starts and
then periodically, moves the processing lists of gone consumers back to the queue (a script too),
where they are consumed again: a batch that committed before its consumer died is then a duplicate,
which the inbox turns into a no-op. A consumer that stops cleanly or loses its broker connection
puts its own unacknowledged batches back at once. A consumer wrongly taken for gone (frozen longer
than the timeout) only causes duplicates, never a loss.

Messages are kombu's Redis messages (JSON: `body`, base64 by default, `properties.delivery_info`),
so kombu publishers, and kombu consumers on the same queue, keep working alongside.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis
from kombu.transport.redis import PRIORITY_STEPS

logger = logging.getLogger(__name__)

SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority
_CHUNK = 1000  # elements per RPUSH inside the scripts (Lua's unpack has a limit)

# KEYS: batch list, this consumer's set of batch lists, the consumers set, heartbeat, queue lists by
# priority. ARGV: at most this many, consumer id, heartbeat ms.
_RECEIVE = f"""
local want = tonumber(ARGV[1])
local moved = {{}}
for i = 5, #KEYS do
    if #moved >= want then break end
    local items = redis.call('RPOP', KEYS[i], want - #moved)
    if items then
        for _, item in ipairs(items) do moved[#moved + 1] = item end
    end
end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[3])
if #moved > 0 then
    for s = 1, #moved, {_CHUNK} do
        redis.call('RPUSH', KEYS[1], unpack(moved, s, math.min(s + {_CHUNK} - 1, #moved)))
    end
    redis.call('SADD', KEYS[2], KEYS[1])
    redis.call('SADD', KEYS[3], ARGV[2])
end
return moved
"""

# KEYS: the consumers set, the queue's list. ARGV: prefix of the heartbeat keys, prefix of the sets of
# batch lists, the calling consumer's id, '1' to put the caller's own lists back too.
# Oldest message last on the right, so it is received first (as kombu restores).
_RECOVER = f"""
local restored = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local own = id == ARGV[3]
    if (own and ARGV[4] == '1') or (not own and redis.call('EXISTS', ARGV[1] .. id) == 0) then
        local lists = ARGV[2] .. id
        for _, list in ipairs(redis.call('SMEMBERS', lists)) do
            local items = redis.call('LRANGE', list, 0, -1)
            local reversed = {{}}
            for i = #items, 1, -1 do reversed[#reversed + 1] = items[i] end
            for s = 1, #reversed, {_CHUNK} do
                redis.call('RPUSH', KEYS[2], unpack(reversed, s, math.min(s + {_CHUNK} - 1, #reversed)))
            end
            restored = restored + #items
            redis.call('DEL', list)
        end
        redis.call('DEL', lists)
        if not own then redis.call('SREM', KEYS[1], id) end
    end
end
return restored
"""


@dataclass
class Delivery:
    """One message as kombu's Redis transport stores it, decoded lazily (in the apply thread)."""

    raw: bytes

    def decode(self) -> tuple[bytes | str, str]:
        """(body, routing key); a message that is not kombu's JSON is its own body (then parked)."""
        try:
            payload = json.loads(self.raw)
            properties = payload.get("properties") or {}
            body = payload["body"]
            if properties.get("body_encoding") == "base64":
                body = base64.b64decode(body)
            compression = (payload.get("headers") or {}).get("compression")
            if compression:
                from kombu.compression import decompress

                body = decompress(body, compression)
            routing_key = (properties.get("delivery_info") or {}).get("routing_key") or ""
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            return self.raw, ""
        return body, routing_key if isinstance(routing_key, str) else ""


@dataclass
class Batch:
    """The messages received into one processing list."""

    key: str
    deliveries: list[Delivery] = field(default_factory=list)


class RedisQueue:
    """Receive, acknowledge and recover batches of one kombu queue on Redis (see the module docstring)."""

    def __init__(self, url: str, queue: str, *, visibility_timeout: float, key_prefix: str = "") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=25)
        self.consumer_id = uuid.uuid4().hex[:16]
        self.visibility_timeout = max(float(visibility_timeout), 1.0)
        self.queue_keys = [key_prefix + (queue if not pri else f"{queue}{SEP}{pri}") for pri in PRIORITY_STEPS]
        base = f"{key_prefix}_inbound{SEP}{queue}{SEP}"
        self.consumers_key = f"{base}consumers"
        self.heartbeat_prefix = f"{base}alive{SEP}"
        self.lists_prefix = f"{base}processing{SEP}"
        self.heartbeat_key = self.heartbeat_prefix + self.consumer_id
        self.lists_key = self.lists_prefix + self.consumer_id
        self._receive = self.client.register_script(_RECEIVE)
        self._recover = self.client.register_script(_RECOVER)
        self._sequence = 0
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._recovered_at = 0.0
        self.current = self._new_batch()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Beat, put back what gone consumers (and an earlier session of this one) left; returns that count."""
        self._beat()
        if self._heartbeat is None:
            self._stop_heartbeat.clear()
            self._heartbeat = threading.Thread(target=self._beat_forever, name="inbound-heartbeat", daemon=True)
            self._heartbeat.start()
        self.current = self._new_batch()  # what an earlier session received goes back with its batches
        return self.recover(own=True)

    def close(self, *, give_back: bool = True) -> None:
        """Stop beating; put this consumer's unacknowledged batches back (not after a broker error: next start)."""
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
        try:
            if give_back:
                self.recover(own=True)
                self.client.srem(self.consumers_key, self.consumer_id)
                self.client.delete(self.heartbeat_key)
        except redis.exceptions.RedisError as error:  # they come back once the heartbeat has expired
            logger.warning("inbound consumer: could not put its batches back (%s)", type(error).__name__)
        finally:
            self.client.close()

    def _beat(self) -> None:
        self.client.set(self.heartbeat_key, "1", px=int(self.visibility_timeout * 1000))

    def _beat_forever(self) -> None:
        interval = self.visibility_timeout / 4
        while not self._stop_heartbeat.wait(interval):
            try:
                self._beat()
            except redis.exceptions.RedisError as error:
                logger.warning("inbound consumer heartbeat failed (%s)", type(error).__name__)

    def recover(self, *, own: bool = False) -> int:
        """Move the batches of gone consumers (and with `own`, this one's) back to the queue."""
        self._recovered_at = time.monotonic()
        restored = self._recover(
            keys=[self.consumers_key, self.queue_keys[0]],
            args=[self.heartbeat_prefix, self.lists_prefix, self.consumer_id, "1" if own else "0"],
        )
        if restored:
            logger.info("inbound consumer: %d unacknowledged messages put back on the queue", restored)
        return int(restored)

    def maybe_recover(self) -> None:
        if time.monotonic() - self._recovered_at >= self.visibility_timeout / 2:
            self.recover()

    # ------------------------------------------------------------ batches

    def _new_batch(self) -> Batch:
        self._sequence += 1
        return Batch(key=f"{self.lists_prefix}{self.consumer_id}{SEP}{self._sequence}")

    def receive(self, max_count: int, timeout: float) -> list[Delivery]:
        """Up to `max_count` messages into the current batch; waits up to `timeout` for a first one."""
        deliveries = self._take(max_count)
        if not deliveries and timeout > 0:
            # Wait until the queue has a message without taking it (a list rotated onto itself is unchanged).
            self.client.blmove(self.queue_keys[0], self.queue_keys[0], timeout, "RIGHT", "RIGHT")
            deliveries = self._take(max_count)
        return deliveries

    def _take(self, max_count: int) -> list[Delivery]:
        batch = self.current
        items = self._receive(
            keys=[batch.key, self.lists_key, self.consumers_key, self.heartbeat_key, *self.queue_keys],
            args=[max_count, self.consumer_id, int(self.visibility_timeout * 1000)],
        )
        deliveries = [Delivery(item) for item in items or ()]
        batch.deliveries += deliveries
        return deliveries

    def seal(self) -> Batch:
        """The current batch, handed to be applied; what is received from now on goes to a new one."""
        batch, self.current = self.current, self._new_batch()
        return batch

    def ack(self, batch: Batch) -> None:
        """Its transaction committed: forget the batch's processing list."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(batch.key)
        pipe.srem(self.lists_key, batch.key)
        pipe.execute()
