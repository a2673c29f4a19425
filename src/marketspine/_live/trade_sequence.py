"""Trade sequencing: per market, which trades to deliver, which are duplicates, and when a
reconnect or a subscription change left a hole to fill (pure: trades in, decisions out, like
h11's state machine).

The stream feeds every trade frame with the ``epoch`` it came under: a new epoch starts with
every subscription request (a new connection's first, or a change re-sent on the same one),
since upstream then answers afresh and trades of the switch can be lost. The first trade of a
tracked market in a new epoch holds the market's stream while the hole is fetched from REST;
trades arriving meanwhile wait, and are replayed in order once the fill is handed back.

Upbit answers a request (unless ``is_only_realtime``) with each code's latest trade as a
SNAPSHOT frame first. A snapshot already delivered proves nothing was missed: the market
adopts the new epoch without a fill. An unseen snapshot always asks for the hole before it,
whatever its epoch (frames of the old subscription may still arrive after a request is
sent, so the epoch alone cannot tell where the new answer starts).

The ids remembered per market for de-duplication are live state like any other: given the
shared ``MemoryBudget``, each market's window of ids is one entry of it (one holder per
sequencer). When the budget evicts it (the market that traded least recently), only its
newest ids stay (its last trade among them: a snapshot of it is still known, and a
reconnect still fills the gap after it).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TypeAlias

from .._base.memory import MemoryBudget
from ..records import Trade
from .listener import Gap

log = logging.getLogger("marketspine.live")

__all__ = [
    "KEPT_WHEN_EVICTED",
    "SEEN_PER_MARKET",
    "FillNeeded",
    "Output",
    "TradeSequencer",
    "TradeTrack",
]

# Sequential ids remembered per market to drop duplicates (REST fill vs. WebSocket replays).
# Duplicates are the newest trades around a reconnect, so a short window is enough; 4096
# ids cost about 690 KB per market (145 MiB for 216 markets, outside any bound in bytes).
SEEN_PER_MARKET = 512
# Ids a market keeps when the budget evicts its window (uncharged until it trades again).
KEPT_WHEN_EVICTED = 16
_ID_BYTES = sys.getsizeof(10**16)  # a 17-digit sequential id
_holders = itertools.count()  # each sequencer is its own holder of the budget


@dataclass
class TradeTrack:
    """What one market's trade stream has delivered, for de-duplication and gap filling."""

    last: Trade | None = None
    epoch: int = 0  # the epoch (subscription request) the last trade came under
    seen: deque[int] = field(default_factory=lambda: deque(maxlen=SEEN_PER_MARKET))
    # The highest id in ``seen``: a newer trade (the usual case) is new without a scan. No
    # set beside the window: a set's table is rebuilt as ids come and go, and those
    # rebuilds (up to 64 KB each, per market) left holes in the C heap that grew RSS.
    top: int = -1
    # While a gap is being filled, trades arriving meanwhile wait here with their epoch and
    # whether they came as a SNAPSHOT.
    pending: list[tuple[int, Trade, bool]] | None = None

    def remember(self, trade: Trade, epoch: int) -> None:
        self.seen.append(trade.seq)
        self.top = max(self.top, trade.seq)
        self.last = trade
        self.epoch = epoch

    def has(self, seq: int) -> bool:
        """Whether the trade with sequential id ``seq`` was delivered already."""
        return seq <= self.top and seq in self.seen

    def keep_newest(self, count: int) -> None:
        """Forget all but the ``count`` ids remembered last."""
        newest = list(self.seen)[-count:]
        self.seen = deque(newest, maxlen=SEEN_PER_MARKET)
        self.top = max(newest, default=-1)

    def nbytes(self) -> int:
        """About how many bytes the remembered ids hold (the window and the ids)."""
        return sys.getsizeof(self.seen) + len(self.seen) * _ID_BYTES


@dataclass(frozen=True, eq=False)
class FillNeeded:
    """Fetch the trades of ``market`` after ``before`` and before ``after`` (the first trade
    of a new answer, under ``epoch``), then hand them to ``TradeSequencer.filled``."""

    market: str
    before: Trade
    after: Trade
    epoch: int
    track: TradeTrack


# What the sequencer asks its owner to do, in order: deliver a trade or a gap, or fill.
Output: TypeAlias = Trade | Gap | FillNeeded


class TradeSequencer:
    """Per-market trade sequencing with counters for statistics; ``budget`` (optional)
    charges each market's remembered ids to the shared memory budget."""

    def __init__(self, budget: MemoryBudget | None = None) -> None:
        self._tracks: dict[str, TradeTrack] = {}
        self._charged: dict[str, int] = {}  # per market, as charged to the budget
        self._budget = budget
        self._holder = f"trade-ids-{next(_holders)}"
        if budget is not None:
            budget.register(self._holder, self._evicted)
        self.duplicates = 0
        self.gaps = 0
        self.gap_trades = 0

    def _remember(self, market: str, track: TradeTrack, trade: Trade, epoch: int) -> None:
        track.remember(trade, epoch)
        if self._budget is None:
            return
        size = track.nbytes()
        if self._charged.get(market) == size:
            self._budget.touch(self._holder, market)
        else:
            self._charged[market] = size
            self._budget.charge(self._holder, market, size)

    def _evicted(self, key: Hashable) -> None:
        """The budget dropped this market's ids: forget them (not its last trade)."""
        market = str(key)
        self._charged.pop(market, None)
        track = self._tracks.get(market)
        if track is not None:
            track.keep_newest(KEPT_WHEN_EVICTED)

    def receive(
        self, trade: Trade, epoch: int, *, subscribed: bool, snapshot: bool = False
    ) -> list[Output]:
        """Take one trade frame that came under ``epoch``; ``subscribed`` says whether its
        market is still subscribed (late frames of a market just dropped are ignored),
        ``snapshot`` whether it was a SNAPSHOT frame (the start of a request's answer)."""
        track = self._tracks.get(trade.market)
        if track is None:
            if not subscribed:
                return []
            track = self._tracks[trade.market] = TradeTrack()
        if track.pending is not None:
            track.pending.append((epoch, trade, snapshot))
            return []
        if track.has(trade.seq):
            self.duplicates += 1
            if snapshot:  # the new answer starts where delivery stands: nothing missed
                track.epoch = epoch
            return []
        if track.last is not None and (snapshot or epoch != track.epoch):
            # A new answer (reconnect, resubscription) starts with a trade not delivered:
            # hold the stream while the hole before it is filled. The trade itself ends the
            # fill, so it is replayed as a plain one.
            track.pending = [(epoch, trade, False)]
            return [FillNeeded(trade.market, track.last, trade, epoch, track)]
        self._remember(trade.market, track, trade, epoch)
        return [trade]

    def filled(
        self, fill: FillNeeded, missing: list[Trade], *, complete: bool, reason: str
    ) -> list[Output]:
        """Hand back the trades fetched for ``fill`` (oldest first): returns the Gap, the
        missing trades and then the trades held meanwhile, in delivery order."""
        track = fill.track
        if self._tracks.get(fill.market) is not track:
            return []  # unsubscribed while filling
        self.gaps += 1
        self.gap_trades += len(missing)
        if not complete:
            log.warning(
                "trades of %s lost between %d and %d ms: the gap could not be filled (%s)",
                fill.market, fill.before.ms, fill.after.ms, reason,
                extra={"event": "gap_unfilled", "key": fill.market, "filled": len(missing)},
            )  # fmt: skip
        out: list[Output] = [
            Gap(fill.market, fill.before.ms, fill.after.ms, len(missing), complete, reason)
        ]
        for trade in missing:
            self._remember(fill.market, track, trade, fill.epoch)
            out.append(trade)
        track.epoch = fill.epoch
        pending, track.pending = track.pending or [], None
        for held_epoch, trade, snapshot in pending:
            out.extend(self.receive(trade, held_epoch, subscribed=True, snapshot=snapshot))
        return out

    def filling(self, market: str) -> bool:
        """Whether a hole in ``market``'s trades is being filled (later trades wait)."""
        track = self._tracks.get(market)
        return track is not None and track.pending is not None

    def remembered(self, market: str) -> int:
        """How many sequential ids of ``market`` are remembered for de-duplication."""
        track = self._tracks.get(market)
        return 0 if track is None else len(track.seen)

    def markets(self) -> list[str]:
        """The markets whose trades are tracked."""
        return list(self._tracks)

    def forget(self, market: str) -> None:
        """Drop what ``market`` delivered: a later subscription starts afresh instead of
        back-filling a long absence."""
        self._tracks.pop(market, None)
        if self._charged.pop(market, None) is not None and self._budget is not None:
            self._budget.release(self._holder, market)
