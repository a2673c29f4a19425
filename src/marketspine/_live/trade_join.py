"""Joining a trade snapshot taken from REST to a live trade stream (pure: trades in,
decisions out, like ``_live.trade_sequence``).

``serve``'s WebSocket may answer a client's trade snapshot from REST before the live stream
of that market reaches it, and the live stream starts wherever it starts: later than the
snapshot (trades in between were never streamed: a hole) or earlier (the stream lags the
REST call: trades up to the snapshot are covered by it). Until the stream meets the
snapshot, each live trade is judged:

- the snapshot's own trade (same ``sequential_id``): joined, nothing lost or repeated;
- an earlier trade time: covered by the snapshot, dropped;
- the same or a later trade time: the stream is held while REST is walked back from that
  trade to the snapshot (``WalkNeeded``; sequential ids identify trades but do not order
  them, so Upbit's listing decides). If the walk meets the snapshot, the trades it found in
  between go out first, then the held ones; if it passes the snapshot's time without
  meeting it, the snapshot comes later in Upbit's order (same millisecond): the trade is
  dropped and the stream judged on. A walk that could not finish (REST failing, history
  too long) joins with what it found.

At most ``JOIN_HOLD_MAX`` live trades are held: one more ends the join at once, with the
held trades delivered and the hole left unfilled (``incomplete`` says so), and the walk's
answer, when it comes, is ignored. A live stream is never held without a bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ..records import Trade
from .trade_fill import Walk

__all__ = ["JOIN_HOLD_MAX", "JoinOutput", "TradeJoin", "WalkNeeded"]

# Live trades held per join while its REST walk runs. A walk is usually one REST call
# (well under a second; at most FILL_MAX_PAGES calls, a few seconds at the shared budget's
# pace) while even Upbit's busiest market trades a few hundred times a second at its peaks:
# a normal walk holds tens, at most a few thousand. Ten thousand (~3 MB) is only reached
# by a walk that hangs, and then the trades go out with the hole named, not queued forever.
JOIN_HOLD_MAX = 10_000


@dataclass(frozen=True, slots=True)
class WalkNeeded:
    """Walk REST back from ``after`` to ``before`` (``_trade_fill.walk_back``), then hand
    the ``Walk`` to ``TradeJoin.walked``."""

    market: str
    before: Trade
    after: Trade


# What the join asks its owner to do, in order: deliver a trade, or walk.
JoinOutput: TypeAlias = Trade | WalkNeeded


class TradeJoin:
    """The live trades of one market, joined to ``snapshot`` (a trade already sent)."""

    def __init__(self, snapshot: Trade, *, hold_max: int = JOIN_HOLD_MAX) -> None:
        self.snapshot = snapshot
        self.hold_max = hold_max
        self.joined = False
        self.dropped = 0  # live trades the snapshot covered
        self.filled = 0  # trades delivered from REST between the snapshot and the stream
        self.incomplete = ""  # why a walk could not finish, if one could not
        self._held: list[Trade] | None = None  # live trades waiting while a walk runs

    def receive(self, trade: Trade) -> list[JoinOutput]:
        """Take one live trade (in the stream's order)."""
        if self.joined:
            return [trade]
        if self._held is not None:
            if len(self._held) < self.hold_max:
                self._held.append(trade)
                return []
            # The walk takes too long: give it up rather than hold the stream unbounded.
            held, self._held = self._held, None
            self.joined = True
            self.incomplete = (
                f"more than {self.hold_max} live trades came while REST was walked back to"
                " the snapshot; the trades in between were not fetched"
            )
            return [*held, trade]
        snapshot = self.snapshot
        if trade.seq == snapshot.seq:
            self.joined = True
            return [trade]
        if trade.ms < snapshot.ms:
            self.dropped += 1
            return []
        self._held = [trade]
        return [WalkNeeded(trade.market, snapshot, trade)]

    def walked(self, walk: Walk) -> list[JoinOutput]:
        """Hand back the walk asked for: the trades to deliver, in order (and maybe the
        next walk, when the held trade turned out to come before the snapshot); nothing once
        the join ended without it (too many trades held)."""
        held, self._held = self._held or [], None
        if not held:
            return []
        first, rest = held[0], held[1:]
        if walk.complete and not walk.met and first.ms == self.snapshot.ms:
            # Upbit lists the snapshot after this trade of the same millisecond.
            self.dropped += 1
            out: list[JoinOutput] = []
            for trade in rest:
                out.extend(self.receive(trade))
            return out
        if not walk.complete:
            self.incomplete = walk.reason
        self.joined = True
        self.filled += len(walk.trades)
        return [*walk.trades, first, *rest]
