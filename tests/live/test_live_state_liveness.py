"""LiveState's live answers, on hand-set liveness: what the stream proves current is answered
however old it is; a new connection, an unsubscription or an unproven stream fall back to the
age of the event; REST answers of subscribed markets become live only under the same epoch."""

from __future__ import annotations

from marketspine._live.state import LiveState
from marketspine._live.stream import Liveness
from marketspine.records import Ticker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ticker(market: str, trade_ms: int, price: float = 100.0) -> Ticker:
    return Ticker(
        market, trade_ms + 5, trade_ms, price, 1.0, 2.0, 0.5, 1.0, "RISE", 0.1, 0.1, 1.0, 2.0,
        3.0, 4.0, 5.0, 6.0, "2026-01-01", 0.1, "2025-06-01",
    )  # fmt: skip


def state_with(liveness: list[Liveness | None]) -> tuple[LiveState, Clock]:
    clock = Clock()
    state = LiveState(clock=clock)
    state.follow_liveness(lambda: liveness[0])
    return state, clock


def test_a_quiet_market_stays_live_while_the_stream_proves_it_current() -> None:
    liveness: list[Liveness | None] = [Liveness(epoch=1, age_s=0.2)]
    state, clock = state_with(liveness)
    state.apply(ticker("KRW-DOGE", 1_000))
    clock.now += 3600  # an hour without a trade
    assert state.live_ticker("KRW-DOGE", 1.0) == ticker("KRW-DOGE", 1_000)
    assert state.ticker("KRW-DOGE", 1.0) is None  # the event itself is an hour old
    # The proof itself must be within the bound.
    liveness[0] = Liveness(epoch=1, age_s=1.5)
    assert state.live_ticker("KRW-DOGE", 1.0) is None
    assert state.live_ticker("KRW-DOGE", 2.0) == ticker("KRW-DOGE", 1_000)


def test_a_new_connection_or_an_unsubscription_ends_the_live_answer() -> None:
    liveness: list[Liveness | None] = [Liveness(epoch=1, age_s=0.0)]
    state, clock = state_with(liveness)
    state.apply(ticker("KRW-BTC", 1_000))
    state.apply(ticker("KRW-ETH", 1_000))
    clock.now += 10
    liveness[0] = Liveness(epoch=2, age_s=0.0)  # reconnected: changes may have been missed
    assert state.live_ticker("KRW-BTC", 1.0) is None
    state.apply(ticker("KRW-BTC", 2_000))  # the new connection's snapshot
    clock.now += 10
    assert state.live_ticker("KRW-BTC", 1.0) == ticker("KRW-BTC", 2_000)
    state.unsubscribed("ticker", "KRW-BTC")
    assert state.live_ticker("KRW-BTC", 1.0) is None
    assert state.live_ticker("KRW-BTC", None) == ticker("KRW-BTC", 2_000)  # any age: held
    liveness[0] = None  # not connected
    state.apply(ticker("KRW-ETH", 3_000))
    clock.now += 10
    assert state.live_ticker("KRW-ETH", 1.0) is None


def test_rest_answers_become_live_only_under_the_epoch_they_were_asked_in() -> None:
    liveness: list[Liveness | None] = [Liveness(epoch=4, age_s=0.1)]
    state, clock = state_with(liveness)
    epoch = state.epoch()
    assert epoch == 4
    state.seed("ticker", [ticker("KRW-XRP", 5_000)], epoch)
    clock.now += 60
    assert state.live_ticker("KRW-XRP", 1.0) == ticker("KRW-XRP", 5_000)
    # An older REST answer never replaces what the stream brought since.
    state.apply(ticker("KRW-XRP", 6_000, price=101.0))
    state.seed("ticker", [ticker("KRW-XRP", 5_500)], epoch)
    assert state.live_ticker("KRW-XRP", 1.0) == ticker("KRW-XRP", 6_000, price=101.0)
    # Asked before a reconnect, answered after: not live.
    liveness[0] = Liveness(epoch=5, age_s=0.1)
    state.seed("ticker", [ticker("KRW-SOL", 7_000)], epoch)
    clock.now += 60
    assert state.live_ticker("KRW-SOL", 1.0) is None
    state.seed("ticker", [ticker("KRW-SOL", 7_000)], None)  # asked while not live
    assert state.live_ticker("KRW-SOL", 1.0) is None
