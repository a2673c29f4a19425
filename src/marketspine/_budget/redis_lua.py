"""The Lua scripts that keep one rate budget in Redis for every process on an egress IP.

Each acquisition is ONE script run, so checking the window and booking the send are atomic
across processes, and the time is Redis's own (``TIME`` inside the script): hosts with
skewed clocks still agree. The rules are those of ``LocalRateBudget``:

* at most ``limit`` sends in any ``span`` (window + the margin's floor) — a sorted set of
  sends, each scored with the latest time it may have reached upstream (``LocalRateBudget``'s
  rule). A send is booked *in flight*: at its grant plus the in-flight margin, the spread of
  the round trips beyond the floor (``JitterMargin.in_flight``). The widest in-flight margin
  any process asked with within ``LATE_HOLD_S`` applies to every process's sends still in
  flight, since upstream counts every process's requests by their arrival and the most
  delayed ones decide. Once *answered*, a send is moved to its grant plus its own lateness
  (``MOVE``), so a send that came back on time no longer holds the window's end out by
  anyone's margin;
* a queued or LOW request is paced one per ``span / limit`` (no burst while another process
  waits at the same level or above; a more urgent request goes at once when there is room,
  without moving the pacing schedule);
* the reserve (``rules.WaitOrder.keeps_reserve``): while a request above LOW was seen lately
  (``urgent`` in the state hash, Redis's clock; a process that expects urgent work renews it
  with each heartbeat), the sends that are not urgent may hold only ``limit - reserve``
  slots of the window unless one of them leaves within ``reserve_wait``. An urgent send's
  member ends in ``:u``: it spends the reserve, not LOW's share;
* priorities across processes: a process that waits registers a *ticket* at its most urgent
  waiting priority (it expires unless renewed, so a killed process stops counting); a
  request is refused while a ticket of a higher priority waits, so LOW never takes the slot
  a CRITICAL request elsewhere is waiting for. The priorities passed in are the waiters'
  aged levels (``rules.WaitOrder``): the process decides them, the script only compares;
* a penalty (after a 429 or 418) stops the group for everyone until it runs out;
* each process keeps a heartbeat in every group's set of processes (``HEARTBEAT``: its
  ticket scored with the time it lapses), renewed by each of its asks too, so each knows how
  many share the ceiling — the number it divides the ceiling by while Redis is lost — as of
  its last ask: a newcomer is counted before its first send, and every process that asks
  after that counts it (a set per group, in the group's cluster slot, not one per scope).
  Beside it, the time of the latest count each process has taken in (``beats``, told by the
  process: a count in a reply not yet read does not count) and when it joined (``joined``,
  anew after its heartbeat lapsed): a process learns how many others last took in a count
  from before it joined (*unseen*), whose number may lack it while Redis is lost
  (``rules.ProcessCount``).

Times are integer microseconds. Lua 5.1 prints large numbers as ``1.7e+15``, so every number
handed back to Redis goes through ``string.format('%d')``. ``now_us`` may be passed in by
tests to drive the clock by hand; empty means ``TIME``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .rules import WAIT_ORDER, Priority, WaitOrder

__all__ = ["LATE_HOLD_S", "PROCESS_TTL_S", "AcquireReply", "BudgetKeys", "BudgetScripts"]

# A process's in-flight margin applies to every process for this long after it last asked.
LATE_HOLD_S = 10.0
# A process counts among those sharing the budget this long after its last heartbeat or ask.
PROCESS_TTL_S = 5.0

_PRELUDE = """
local function s(x) return string.format('%d', x) end
local function now_us(given)
  if given ~= nil and given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# Registers ``ticket`` at ``now`` for ``ttl`` in the processes set (scored with when it lapses)
# and in joined (since when it is counted, anew after a lapse), and keeps in beats the time of
# the latest count the process has taken in: on joining, ``now`` (its first count has every
# process that joined before it), then ``applied`` as the process tells it (the time of the
# latest reply it has read; Redis may have counted a newcomer in a reply its process has not
# read yet). Forgets the lapsed ones. Returns how many processes share the budget and how
# many others' latest count taken in is from before ``ticket`` joined (their number may lack
# it).
_REGISTER = """
local function register(pkey, bkey, jkey, ticket, now, ttl, applied)
  local gone = redis.call('ZRANGEBYSCORE', pkey, '-inf', s(now))
  for _, lapsed in ipairs(gone) do
    redis.call('ZREM', pkey, lapsed)
    redis.call('ZREM', bkey, lapsed)
    redis.call('ZREM', jkey, lapsed)
  end
  redis.call('ZADD', pkey, s(now + ttl), ticket)
  if redis.call('ZADD', jkey, 'NX', s(now), ticket) == 1 then
    redis.call('ZADD', bkey, s(now), ticket)
  elseif applied ~= nil and applied ~= '' then
    local beat = tonumber(redis.call('ZSCORE', bkey, ticket) or '0')
    if tonumber(applied) > beat then redis.call('ZADD', bkey, applied, ticket) end
  end
  local joined = redis.call('ZSCORE', jkey, ticket)
  local life = math.floor(2 * ttl / 1000)
  redis.call('PEXPIRE', pkey, life)
  redis.call('PEXPIRE', bkey, life)
  redis.call('PEXPIRE', jkey, life)
  return redis.call('ZCARD', pkey), redis.call('ZCOUNT', bkey, '-inf', '(' .. joined)
end
"""

# KEYS: sends, state, wait:0 .. wait:3, processes, beats, joined
# ARGV: limit, span_us, late_hold_us, priority, next_priority (-1: none), ticket, ticket_ttl_us,
#       burst (1: may go unpaced), keep_us (key lifetime), now_us ('' = TIME), process_ttl_us,
#       urgent (1: the asker has a request above LOW waiting, or expects some), reserve (slots
#       LOW keeps for urgent work), reserve_wait_us, reserve_hold_us
#       (``rules.WaitOrder.keeps_reserve``), urgent_send (1: the head asked above LOW),
#       late_us (the asker's in-flight margin), applied_us (see ``_REGISTER``)
# Returns {granted, wait_us, tokens, now_us, late_us (the in-flight margin that applied),
# member (the send's member in KEYS[1]; '' when refused), processes (sharing the budget, the
# asker included: its heartbeat is renewed here), score_us (the member's score: now_us +
# late_us; 0 when refused), unseen (see ``_REGISTER``)}.
_ACQUIRE = (
    _PRELUDE
    + _REGISTER
    + """
local limit, span, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prio, nextp, ticket = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local ttl, burst, keep = tonumber(ARGV[7]), ARGV[8] == '1', tonumber(ARGV[9])
local now = now_us(ARGV[10])
local pttl = tonumber(ARGV[11])
local processes, unseen = register(KEYS[7], KEYS[8], KEYS[9], ticket, now, pttl, ARGV[18])
local urgent, reserve = ARGV[12] == '1', tonumber(ARGV[13] or '0')
local reserve_wait, reserve_hold = tonumber(ARGV[14] or '0'), tonumber(ARGV[15] or '0')
local urgent_send = ARGV[16] == '1'
if urgent then redis.call('HSET', KEYS[2], 'urgent', s(now)) end
-- The widest in-flight margin any process asked for within the hold applies to all.
local late = tonumber(ARGV[17] or '0')
local wide = tonumber(redis.call('HGET', KEYS[2], 'late') or '0')
local wide_until = tonumber(redis.call('HGET', KEYS[2], 'late_until') or '0')
if late >= wide or wide_until <= now then
  redis.call('HSET', KEYS[2], 'late', s(late), 'late_until', s(now + hold))
else
  late = wide
end
local interval = math.floor(span / limit)
-- peer: another process waits at this level or above, so this one queues behind it (paced)
local higher, peer = false, false
for p = 0, 3 do
  local key = KEYS[3 + p]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', s(now))
  redis.call('ZREM', key, ticket)
  if redis.call('ZCARD', key) > 0 then
    if p > prio then higher = true end
    if p >= prio then peer = true end
  end
end
-- Sends are kept 5 s (or 3 spans): enough for the window, and for a look at recent history.
local horizon = 3 * span
if horizon < 5000000 then horizon = 5000000 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', s(now - horizon))
local at = now
local blocked = tonumber(redis.call('HGET', KEYS[2], 'blocked') or '0')
if blocked > at then at = blocked end
local used = redis.call('ZCOUNT', KEYS[1], '(' .. s(now - span), '+inf')
if used >= limit then
  local kth = redis.call('ZREVRANGE', KEYS[1], limit - 1, limit - 1, 'WITHSCORES')
  local free = tonumber(kth[2]) + span
  if free > at then at = free end
end
-- The reserve: while a request above LOW was seen lately, the sends that are not urgent
-- may hold only limit - reserve slots of the window, unless one leaves within reserve_wait.
if prio == 0 and reserve > 0 and reserve < limit then
  local seen = tonumber(redis.call('HGET', KEYS[2], 'urgent') or '-1')
  if seen >= 0 and now - seen < reserve_hold then
    local cap, win = limit - reserve, span - reserve_wait
    local recent = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. s(now - win), '+inf', 'WITHSCORES')
    local bulk = {}
    for i = 1, #recent, 2 do
      if string.sub(recent[i], -2) ~= ':u' then bulk[#bulk + 1] = tonumber(recent[i + 1]) end
    end
    if #bulk >= cap then
      local free = bulk[#bulk - cap + 1] + win
      if free > at then at = free end
    end
  end
end
local paced = (not burst) or peer
if paced then
  local last = redis.call('HGET', KEYS[2], 'last')
  if last and tonumber(last) + interval > at then at = tonumber(last) + interval end
end
local function keep_alive()
  redis.call('PEXPIRE', KEYS[1], math.floor(keep / 1000))
  local life = keep
  if blocked - now + keep > life then life = blocked - now + keep end
  redis.call('PEXPIRE', KEYS[2], math.floor(life / 1000))
end
if at <= now and not higher then
  local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
  local member = s(now) .. ':' .. seq
  if urgent_send then member = member .. ':u' end
  -- In flight: counted at the latest it may arrive until its reply tells (MOVE).
  redis.call('ZADD', KEYS[1], s(now + late), member)
  -- A paced grant keeps to the slot schedule: the few ms the asker needed to come back
  -- (up to a quarter interval) are not lost from every interval. The window cap above
  -- still counts the real send times. A grant out of turn leaves the schedule alone.
  if paced then
    local slot = now
    local last = redis.call('HGET', KEYS[2], 'last')
    if last then
      slot = tonumber(last) + interval
      if slot < now - math.floor(interval / 4) then slot = now - math.floor(interval / 4) end
    end
    redis.call('HSET', KEYS[2], 'last', s(slot))
  end
  if nextp >= 0 then
    redis.call('ZADD', KEYS[3 + nextp], s(now + ttl), ticket)
    redis.call('PEXPIRE', KEYS[3 + nextp], math.floor(keep / 1000))
  end
  keep_alive()
  return {1, 0, limit - used - 1, now, late, member, processes, s(now + late), unseen}
end
redis.call('ZADD', KEYS[3 + prio], s(now + ttl), ticket)
redis.call('PEXPIRE', KEYS[3 + prio], math.floor(keep / 1000))
keep_alive()
local wait = at - now
-- Refused only for a more urgent waiter elsewhere: look again soon; it takes the slot first.
if wait <= 0 then wait = math.floor(interval / 4) + 1 end
local left = limit - used
if left < 0 then left = 0 end
return {0, wait, left, now, late, '', processes, 0, unseen}
"""
)

# KEYS: sends, state. ARGV: limit, span_us, remaining_sec, age_us, keep_us, now_us
# Books the sends upstream counted (its Remaining-Req) that no process booked here: other
# hosts on the IP that do not share this Redis. Returns how many were booked.
_OBSERVE = (
    _PRELUDE
    + """
local limit, span = tonumber(ARGV[1]), tonumber(ARGV[2])
local remaining, age, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_us(ARGV[6])
if remaining < 0 then remaining = 0 end
local since = now - 2 * age - span
local ours = redis.call('ZCOUNT', KEYS[1], '(' .. s(since), '+inf')
local extra = (limit - remaining) - ours
if extra <= 0 then return 0 end
for i = 1, extra do
  local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
  redis.call('ZADD', KEYS[1], s(now), s(now) .. ':' .. seq)
end
redis.call('PEXPIRE', KEYS[1], math.floor(keep / 1000))
return extra
"""
)

# KEYS: state. ARGV: seconds_us, keep_us, now_us. Nobody sends in the group until now + seconds.
_PENALIZE = (
    _PRELUDE
    + """
local now = now_us(ARGV[3])
local until_us = now + tonumber(ARGV[1])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked') or '0')
if until_us > blocked then
  redis.call('HSET', KEYS[1], 'blocked', s(until_us))
else
  until_us = blocked
end
redis.call('PEXPIRE', KEYS[1], math.floor((until_us - now + tonumber(ARGV[2])) / 1000))
return until_us - now
"""
)

# KEYS: sends, state. ARGV: keep_us, now_us, ages_us... Books sends made elsewhere (while
# Redis was unreachable) at now - age each, so the window after recovery counts them.
_BOOK = (
    _PRELUDE
    + """
local keep = tonumber(ARGV[1])
local now = now_us(ARGV[2])
for i = 3, #ARGV do
  local at = now - tonumber(ARGV[i])
  local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
  redis.call('ZADD', KEYS[1], s(at), s(at) .. ':' .. seq)
end
redis.call('PEXPIRE', KEYS[1], math.floor(keep / 1000))
redis.call('PEXPIRE', KEYS[2], math.floor(keep / 1000))
return #ARGV - 2
"""
)


# KEYS: sends. ARGV: member, score_us, booked_us, member, score_us, booked_us, ...
# Counts answered sends at their own lateness: a send still at the score it was booked at (in
# flight) moves to ``score_us``, earlier or later; one moved already moves only later (a
# faster round trip seen since shows it later than thought). So a move sent twice, or two
# moves of one send that arrive in either order, end at the latest; a send already trimmed
# stays trimmed. Returns how many moved.
_MOVE = """
local moved = 0
for i = 1, #ARGV, 3 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    local at, to = tonumber(score), tonumber(ARGV[i + 1])
    if to ~= at and (at == tonumber(ARGV[i + 2]) or to > at) then
      redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
      moved = moved + 1
    end
  end
end
return moved
"""

# KEYS: processes, state, beats, joined. ARGV: ticket, ttl_us, now_us, urgent (1: the process
# expects urgent work), keep_us, applied_us. Renews this process's heartbeat, forgets the
# lapsed ones and returns {processes, unseen, now_us} (``_REGISTER``); with urgent, LOW keeps
# the reserve for it (the state's ``urgent``, as an ask above LOW sets it).
_HEARTBEAT = (
    _PRELUDE
    + _REGISTER
    + """
local ttl = tonumber(ARGV[2])
local now = now_us(ARGV[3])
local processes, unseen = register(KEYS[1], KEYS[3], KEYS[4], ARGV[1], now, ttl, ARGV[6])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[2], 'urgent', s(now))
  local keep = math.floor(tonumber(ARGV[5]) / 1000)
  if redis.call('PTTL', KEYS[2]) < keep then redis.call('PEXPIRE', KEYS[2], keep) end
end
return {processes, unseen, s(now)}
"""
)


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """The Redis keys of one (egress scope, group) budget. The ``{scope:group}`` hash tag
    keeps them in one cluster slot, as a multi-key script needs."""

    sends: str
    state: str
    waits: tuple[str, str, str, str]  # by Priority value
    processes: str  # the heartbeats of the processes sharing the budget
    beats: str  # the time of the latest count of the processes each of them has read
    joined: str  # since when each of them is counted

    @classmethod
    def of(cls, prefix: str, scope: str, group: str) -> BudgetKeys:
        base = f"{prefix}budget:{{{scope}:{group}}}"
        waits = tuple(f"{base}:wait:{p.value}" for p in Priority)
        assert len(waits) == 4
        return cls(
            f"{base}:sends",
            f"{base}:state",
            (waits[0], waits[1], waits[2], waits[3]),
            f"{base}:processes",
            f"{base}:beats",
            f"{base}:joined",
        )

    def all(self) -> list[str]:
        return [self.sends, self.state, *self.waits, self.processes, self.beats, self.joined]


@dataclass(frozen=True, slots=True)
class AcquireReply:
    """What one acquisition answered: granted now, or how long to wait before asking again."""

    granted: bool
    wait_s: float
    tokens: int  # sends the window still allows
    redis_now_us: int
    late_s: float  # the in-flight margin that applied: the asker's, or another process's wider
    member: str = ""  # a granted send's member in the sends set
    processes: int = 1  # processes sharing the budget (heartbeats not lapsed), the asker too
    score_us: int = 0  # a granted send's score as booked: redis_now_us + the in-flight margin
    unseen: int = 0  # other processes whose latest count read is from before the asker joined


def _us(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


class BudgetScripts:
    """The budget scripts registered on one Redis connection (loaded on first use and
    reloaded by redis-py after a server restart empties its script cache)."""

    def __init__(self, redis: Redis, *, keep_s: float = 60.0) -> None:
        self._acquire = redis.register_script(_ACQUIRE)
        self._observe = redis.register_script(_OBSERVE)
        self._penalize = redis.register_script(_PENALIZE)
        self._book = redis.register_script(_BOOK)
        self._move = redis.register_script(_MOVE)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._redis = redis
        self._keep_us = _us(keep_s)

    async def acquire(
        self,
        keys: BudgetKeys,
        *,
        limit: int,
        span_s: float,
        priority: Priority,
        next_priority: Priority | None,
        ticket: str,
        ticket_ttl_s: float,
        burst: bool,
        late_s: float = 0.0,
        process_ttl_s: float = PROCESS_TTL_S,
        urgent: bool = False,
        urgent_send: bool = False,
        order: WaitOrder = WAIT_ORDER,
        applied_us: int | None = None,
        now_us: int | None = None,
    ) -> AcquireReply:
        """Ask for one send now at ``priority`` in a window of ``span_s`` (window + the
        margin's floor), booked in flight ``late_s`` later (the caller's in-flight margin, or
        a wider one another process asked with lately); ``next_priority`` is the caller's next
        waiter (kept registered as a ticket after a grant), ``burst`` whether this request
        may skip pacing (no waiter of the caller is as urgent, and it is not LOW),
        ``urgent`` whether the caller has a request above LOW waiting or expects some (it
        arms the reserve of ``order`` for everyone), ``urgent_send`` whether the request
        itself was asked above LOW (its send spends the reserve). The ask renews the
        heartbeat of ``ticket`` for ``process_ttl_s``; ``applied_us``: the Redis time of the
        latest count of the processes the caller has taken in (``_REGISTER``)."""
        args: list[Any] = [
            limit,
            _us(span_s),
            _us(LATE_HOLD_S),
            int(priority),
            -1 if next_priority is None else int(next_priority),
            ticket,
            _us(ticket_ttl_s),
            1 if burst and WaitOrder.may_burst(priority) else 0,
            self._keep_us,
            "" if now_us is None else now_us,
            _us(process_ttl_s),
            1 if urgent else 0,
            order.reserve,
            _us(order.reserve_wait),
            _us(order.reserve_hold),
            1 if urgent_send else 0,
            _us(late_s),
            "" if applied_us is None else applied_us,
        ]
        reply = await self._acquire(keys=keys.all(), args=args)
        granted, wait_us, tokens, now, late_us, member, processes, score, unseen = reply
        return AcquireReply(
            bool(granted),
            int(wait_us) / 1_000_000,
            int(tokens),
            int(now),
            int(late_us) / 1e6,
            member.decode() if isinstance(member, bytes) else str(member),
            int(processes),
            int(score),
            int(unseen),
        )

    async def observe(
        self,
        keys: BudgetKeys,
        *,
        limit: int,
        span_s: float,
        remaining: int,
        age_s: float,
        now_us: int | None = None,
    ) -> int:
        """Book what upstream's ``Remaining-Req`` ``sec`` counted beyond the booked sends of
        the window (``age_s``: how long ago the request was sent). Returns sends booked."""
        args: list[Any] = [
            limit,
            _us(span_s),
            remaining,
            _us(age_s),
            self._keep_us,
            "" if now_us is None else now_us,
        ]
        return int(await self._observe(keys=[keys.sends, keys.state], args=args))

    async def penalize(
        self, keys: BudgetKeys, seconds: float, *, now_us: int | None = None
    ) -> float:
        """Stop the group for everyone for ``seconds``; returns the block left (s)."""
        args: list[Any] = [_us(seconds), self._keep_us, "" if now_us is None else now_us]
        return int(await self._penalize(keys=[keys.state], args=args)) / 1_000_000

    async def book(
        self, keys: BudgetKeys, ages_s: list[float], *, now_us: int | None = None
    ) -> int:
        """Book sends made ``ages_s`` seconds ago without Redis; returns how many."""
        args: list[Any] = [self._keep_us, "" if now_us is None else now_us]
        args.extend(_us(age) for age in ages_s)
        return int(await self._book(keys=[keys.sends, keys.state], args=args))

    async def move(self, keys: BudgetKeys, moves_us: Mapping[str, tuple[int, int]]) -> int:
        """Count answered sends at their own lateness: ``moves_us`` maps a member to (its new
        score, the score it was booked at), microseconds of Redis's clock. From its booked
        score a send moves either way, from any other only later; sends already dropped stay
        dropped. Returns how many moved."""
        args: list[Any] = [x for member, move in moves_us.items() for x in (member, *move)]
        return int(await self._move(keys=[keys.sends], args=args)) if args else 0

    async def heartbeat(
        self,
        keys: BudgetKeys,
        ticket: str,
        ttl_s: float,
        *,
        urgent: bool = False,
        applied_us: int | None = None,
        now_us: int | None = None,
    ) -> tuple[int, int, int]:
        """Keep ``ticket`` among the processes sharing the budget of ``keys`` for ``ttl_s``
        more (with ``urgent``: as one that may send urgent work at any moment, so LOW keeps
        the reserve); returns how many processes are (heartbeats not lapsed), ``ticket`` too,
        how many others last took in a count from before ``ticket`` joined (their number may
        lack it; ``applied_us``: the Redis time of the latest count the caller took in), and
        Redis's time of this count."""
        args: list[Any] = [
            ticket,
            _us(ttl_s),
            "" if now_us is None else now_us,
            1 if urgent else 0,
            self._keep_us,
            "" if applied_us is None else applied_us,
        ]
        names = [keys.processes, keys.state, keys.beats, keys.joined]
        processes, unseen, now = await self._heartbeat(keys=names, args=args)
        return int(processes), int(unseen), int(now)

    async def leave(self, keys: BudgetKeys, ticket: str) -> None:
        """Take ``ticket`` out of the processes sharing the budget of ``keys`` (it stops)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (keys.processes, keys.beats, keys.joined):
                pipe.zrem(key, ticket)
            await pipe.execute()
