"""Who holds the upstream WebSocket when processes share a Redis: one short lease, renewed
by its holder, and the markets every process wants.

The lease is one key, ``{feed}lease``, whose value is the holder's token, with a TTL of
``ttl_ms``: the holder renews it well within that; a holder killed with ``kill -9`` stops
renewing and another process takes the key once it lapsed. Every taking bumps
``{feed}generation``, a fencing number: what a holder publishes is checked against the
lease in the same script (see ``_live.redis_log``), so a holder that lost its lease (paused,
cut off) cannot publish after its successor started.

Each process writes the (kind, market, depth) triples it wants into the hash
``{feed}wants`` under its token, stamped with an expiry on Redis's clock; the holder
subscribes upstream to the union of the unexpired entries and deletes expired ones (a dead
process's wants lapse with it).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from .._base.cancel import raise_if_cancelled
from .._store.redis_lease import RELEASE_IF_HELD

__all__ = ["Claim", "LiveLease", "Want", "WantedMarkets", "deepest", "new_token"]

# (kind, market, orderbook depth or 0)
Want = tuple[str, str, int]

# Take the lease if free, renew it if ours; the answer: {held, generation, holder, pttl}.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0'), holder, tonumber(ARGV[2])}
end
if holder then
  return {0, tonumber(redis.call('GET', KEYS[2]) or '0'), holder, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local generation = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
return {1, generation, ARGV[1], tonumber(ARGV[2])}
"""
# Wants: the value is "EXPIRY_MS PAYLOAD", the expiry on Redis's own clock.
_WANT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]) * 4, 60000))
return now
"""
_WANTED = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local value = all[i + 1]
  local cut = string.find(value, ' ')
  if tonumber(string.sub(value, 1, cut - 1)) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(live, string.sub(value, cut + 1))
  end
end
return live
"""
_encode_wants = msgspec.json.Encoder().encode
_decode_wants = msgspec.json.Decoder(list[Want]).decode


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim's answer: whether this process holds the lease, the lease's generation
    (bumped on every taking), the holder's token and the lease's remaining ms."""

    held: bool
    generation: int
    holder: str
    remaining_ms: int


def new_token() -> str:
    return f"{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LiveLease:
    """The live-feed lease under the key prefix ``feed`` (the Redis client stays the
    caller's). Redis errors propagate: the caller decides what an unreachable Redis means."""

    def __init__(
        self, redis: Redis, feed: str, *, ttl_s: float = 1.5, token: str | None = None
    ) -> None:
        self.token = token or new_token()
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._keys = [f"{feed}lease", f"{feed}generation"]
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(RELEASE_IF_HELD)

    async def claim(self) -> Claim:
        """Take the lease if it is free, renew it if it is ours; returns who holds it.
        Raises the CancelledError redis-py may swallow here (``raise_if_cancelled``): a
        holder or standby that was stopped must not go on renewing or taking the lease."""
        held, generation, holder, remaining = await self._claim(
            keys=self._keys, args=[self.token, self.ttl_ms]
        )
        raise_if_cancelled()
        name = holder.decode() if isinstance(holder, bytes) else str(holder)
        return Claim(bool(held), int(generation), name, int(remaining))

    async def release(self) -> bool:
        """Give the lease up now if it is ours (a clean shutdown: no wait for the TTL)."""
        return bool(await self._release(keys=self._keys[:1], args=[self.token]))


class WantedMarkets:
    """Every process's wanted (kind, market, depth) triples in ``{feed}wants``."""

    def __init__(self, redis: Redis, feed: str, *, token: str, ttl_s: float = 3.0) -> None:
        self._key = f"{feed}wants"
        self._token = token
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._redis = redis
        self._want = redis.register_script(_WANT)
        self._wanted = redis.register_script(_WANTED)

    async def publish(self, wants: set[Want]) -> None:
        """Say (again) what this process wants; it lapses ``ttl_s`` after the last call."""
        payload = _encode_wants(sorted(wants))
        await self._want(keys=[self._key], args=[self._token, self._ttl_ms, payload])

    async def withdraw(self) -> None:
        """Want nothing any more (a clean shutdown)."""
        await self._redis.hdel(self._key, self._token)

    async def union(self) -> set[Want]:
        """What the processes alive want together, expired entries deleted; for a market
        wanted at several orderbook depths, the deepest."""
        found: set[Want] = set()
        for raw in await self._wanted(keys=[self._key]):
            found.update(tuple(w) for w in _decode_wants(raw))  # type: ignore[misc]
        return deepest(found)


def deepest(wants: set[Want]) -> set[Want]:
    """``wants`` with one orderbook entry per market, at its greatest depth."""
    depth: dict[str, int] = {}
    for kind, market, levels in wants:
        if kind == "orderbook":
            depth[market] = max(depth.get(market, 0), levels)
    return {
        (kind, market, depth[market] if kind == "orderbook" else levels)
        for kind, market, levels in wants
    }
