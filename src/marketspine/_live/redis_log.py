"""The live feed's log in Redis: what the lease holder received upstream, for the others.

A Redis Stream (``{feed}events``), not pub/sub: pub/sub forgets a message the moment it is
sent, so a follower that blinks (a reconnect, a slow loop) or a process taking the lease over
could not tell what it missed. A stream keeps an ordered log with ids: a follower reads on
from the last id it saw, and a process taking over reads the log to its end first, so its
REST gap fill (by ``sequential_id``) starts exactly after the last trade the old holder
published. The log is capped (``MAXLEN ~``) since only its recent end matters.

Every entry is one event, ``k`` its kind and ``v`` the record in msgpack. Beside market
data the holder appends an ``Alive`` now and then: proof that its socket delivers, so a
follower can answer a quiet market's held ticker as current. Publishing is one
script per batch that first checks the lease is still the publisher's (fencing): a holder
that lost its lease publishes nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import msgspec
from redis.asyncio import Redis

from ..records import Candle, Orderbook, Ticker, Trade
from .listener import Gap

__all__ = ["Alive", "FeedEvent", "RedisFeed", "decode_event", "encode_event"]


class Alive(msgspec.Struct, frozen=True):
    """The holder's socket delivered everything up to ``age_ms`` before this entry;
    ``source`` (the holder's token) and ``epoch`` (its connection) change together with
    what may have been missed."""

    source: str
    epoch: int
    age_ms: int


FeedEvent: TypeAlias = Trade | Ticker | Orderbook | Candle | Gap | Alive

_TYPES: dict[bytes, type[Any]] = {
    b"trade": Trade, b"ticker": Ticker, b"orderbook": Orderbook, b"candle": Candle, b"gap": Gap,
    b"alive": Alive,
}  # fmt: skip
_NAMES = {kind: name for name, kind in _TYPES.items()}
_DECODERS = {name: msgspec.msgpack.Decoder(kind) for name, kind in _TYPES.items()}
_encode = msgspec.msgpack.Encoder().encode

# KEYS: lease, events. ARGV: token, maxlen, then kind, value pairs.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[i], 'v', ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[2], 3600000)  -- a log nobody feeds any more goes in an hour
return 1
"""


def encode_event(event: FeedEvent) -> tuple[bytes, bytes]:
    """(kind, msgpack) of one event, as a log entry holds it."""
    return _NAMES[type(event)], _encode(event)


def decode_event(kind: bytes, value: bytes) -> FeedEvent | None:
    """The event of one log entry; None for a kind this version does not know."""
    decoder = _DECODERS.get(kind)
    return None if decoder is None else decoder.decode(value)


class RedisFeed:
    """The log ``{feed}events`` (fenced by ``{feed}lease``); the Redis client stays the
    caller's. Redis errors propagate."""

    def __init__(self, redis: Redis, feed: str, *, maxlen: int = 20_000) -> None:
        self._redis = redis
        self._lease = f"{feed}lease"
        self.key = f"{feed}events"
        self._maxlen = maxlen
        self._publish = redis.register_script(_PUBLISH)

    async def publish(self, token: str, events: Sequence[FeedEvent]) -> bool:
        """Append ``events`` in order if ``token`` still holds the lease; returns whether
        it did (nothing is appended otherwise)."""
        args: list[bytes | str | int] = [token, self._maxlen]
        for event in events:
            args.extend(encode_event(event))
        return bool(await self._publish(keys=[self._lease, self.key], args=args))

    async def tail(self) -> str:
        """The id of the newest entry ("0-0" for an empty or missing log)."""
        newest = await self._redis.xrevrange(self.key, count=1)
        if not newest:
            return "0-0"
        entry_id = newest[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def recent(self, within_ms: int, *, count: int = 2000) -> list[FeedEvent]:
        """The events of the last ``count`` entries appended within ``within_ms`` (Redis's
        clock), oldest first."""
        seconds, micros = await self._redis.time()
        since = int(seconds) * 1000 + int(micros) // 1000 - within_ms
        entries: Any = await self._redis.xrevrange(self.key, min=str(since), count=count)
        found = (decode_event(fields[b"k"], fields[b"v"]) for _, fields in reversed(entries))
        return [event for event in found if event is not None]

    async def read(
        self, after: str, *, block_ms: int | None = None, count: int = 1000
    ) -> tuple[str, list[FeedEvent]]:
        """The events of the entries after id ``after``, oldest first, and the id of the
        last entry read (``after`` when none); waits up to ``block_ms`` for an entry when
        given. Entries of a kind this version does not know are skipped."""
        answer: Any = await self._redis.xread({self.key: after}, count=count, block=block_ms)
        last, out = after, []
        for _key, entries in answer or ():
            for raw_id, fields in entries:
                last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                event = decode_event(fields[b"k"], fields[b"v"])
                if event is not None:
                    out.append(event)
        return last, out
