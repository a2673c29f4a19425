"""What a recording of the simulator must hold: its trades over the recorded span, with every
field as its WebSocket sends it (or its REST for a trade filled from there)."""

from __future__ import annotations

import json

import msgspec

from marketspine._upbit.ws import decode_ws_frame
from marketspine._upbit.ws_format import trade_message
from marketspine.records import Trade
from marketspine.sim import History


def simulated_trades(history: History, market: str, first: Trade, last: Trade) -> list[Trade]:
    """The simulator's trades of ``market`` from ``first`` to ``last`` (inclusive, by
    sequential_id), as its WebSocket sends them (best quotes included)."""
    found = simulated_between(history, market, first.ms, last.ms + 1)
    return [t for t in found if first.seq <= t.seq <= last.seq]


def simulated_between(history: History, market: str, start_ms: int, end_ms: int) -> list[Trade]:
    """The simulator's trades of ``market`` at ``[start_ms, end_ms)`` as its WebSocket sends
    them (best quotes included), ascending."""
    out = []
    for trade in history.trades_between(market, start_ms, end_ms):
        prev = history.prev_close(market, trade.ms)
        book = history.orderbook(market, trade.ms, 1)
        message = trade_message(
            False,
            market,
            trade,
            prev_close=trade.price if prev is None else prev,
            best_ask=book.asks[0] if book.asks else (0, 0),
            best_bid=book.bids[0] if book.bids else (0, 0),
            sent_ms=trade.ms,
            stream_type="REALTIME",
        )
        event, _ = decode_ws_frame(json.dumps(message).encode())
        assert isinstance(event, Trade)
        out.append(event)
    return out


def differences(recorded: list[Trade], truth: list[Trade]) -> list[str]:
    """What differs between a recording and the truth: missing, duplicated or extra ids,
    and every field of a common trade (the best quotes only where the recording has them:
    REST, which fills holes, does not send them). Empty when they agree."""
    problems = []
    seqs = [t.seq for t in recorded]
    if len(set(seqs)) != len(seqs):
        problems.append(f"{len(seqs) - len(set(seqs))} duplicated sequential ids")
    if seqs != sorted(seqs):
        problems.append("not in sequential_id order")
    want = {t.seq: t for t in truth}
    missing = sorted(want.keys() - set(seqs))
    extra = sorted(set(seqs) - want.keys())
    if missing:
        problems.append(f"{len(missing)} missing, first {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} not simulated, first {extra[:3]}")
    for got in recorded:
        expected = want.get(got.seq)
        if expected is None:
            continue
        if got.best_ask_price is None:  # filled from REST
            expected = msgspec.structs.replace(
                expected,
                best_ask_price=None,
                best_ask_size=None,
                best_bid_price=None,
                best_bid_size=None,
            )
        if got != expected:
            problems.append(f"trade {got.seq} differs: {got} != {expected}")
            if len(problems) > 5:
                break
    return problems
