"""Joining a trade snapshot taken from REST to a live trade stream (pure: trades in,
decisions out, like ``_trade_sequence``).

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ._records import Trade
from ._trade_fill import Walk

__all__ = ["JoinOutput", "TradeJoin", "WalkNeeded"]


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

    def __init__(self, snapshot: Trade) -> None:
        self.snapshot = snapshot
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
            self._held.append(trade)
            return []
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
        next walk, when the held trade turned out to come before the snapshot)."""
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
