"""The simulator's markets: a fixed table of realistic pairs, grown with generated ones.

A market's history is keyed by its code (not by its position in the list), so KRW-BTC is
the same market whether the universe has 5 or 250 markets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .._base.time import DAY_MS, days_from_civil
from .._upbit.rest_rows import CAUTION_KEYS
from ..errors import InvalidRequestError

__all__ = ["CAUTION_FLAGS", "REGION_QUOTES", "SimMarket", "universe"]

CAUTION_FLAGS = CAUTION_KEYS  # the flags a market may be generated with: Upbit's own

# Quote currencies per regional site; the first is the fiat market.
REGION_QUOTES: dict[str, tuple[str, str, str]] = {
    "kr": ("KRW", "BTC", "USDT"),
    "sg": ("SGD", "BTC", "USDT"),
    "id": ("IDR", "BTC", "USDT"),
    "th": ("THB", "BTC", "USDT"),
}
# KRW per unit of each quote currency, to translate the KRW table to other fiat sites.
_KRW_PER_QUOTE = {
    "KRW": 1.0,
    "SGD": 1040.0,
    "IDR": 1 / 11.6,
    "THB": 41.0,
    "USDT": 1430.0,
    "BTC": 1.0e8,
}
# The trade size of a liquid market in KRW; sparse markets trade smaller amounts.
_TRADE_KRW = 2_000_000.0


@dataclass(frozen=True, slots=True)
class SimMarket:
    """One simulated trading pair and the parameters its history is generated from."""

    code: str  # QUOTE-BASE, upper case
    quote: str
    base: str
    korean_name: str | None  # None on region "id"
    english_name: str
    listed_ms: int  # 00:00 UTC of the listing day; no trade exists before it
    warning: bool  # market_event.warning (kr) / market_warning == "CAUTION" elsewhere
    caution: dict[str, bool]  # the five market_event.caution flags (kr)
    key: int  # 64-bit identity of the market's random streams (from the code)
    trades_per_day: float  # average trade count on an ordinary day
    ref_price: float  # price level around the reference day (2026-11-01), in quote currency
    growth: float  # long-run drift of log price per year
    volatility: float  # scale of daily price ranges (fraction of price)
    trade_notional: float  # average trade size in quote currency
    # 00:00 UTC of the day the market left Upbit (no trade from then on); None = still listed
    delisted_ms: int | None = None

    @property
    def market_warning(self) -> str:
        """``"CAUTION"`` or ``"NONE"``, the regional sites' spelling of ``warning``."""
        return "CAUTION" if self.warning else "NONE"


# base, korean, english, quote, price, trades/day, listed, warning, caution flags
_Row = tuple[str, str, str, str, float, float, str, bool, tuple[str, ...]]
_TABLE: tuple[_Row, ...] = (
    ("BTC", "비트코인", "Bitcoin", "KRW", 1.0e8, 86_400, "2017-09-25", False, ()),
    ("ETH", "이더리움", "Ethereum", "KRW", 3.5e6, 60_000, "2017-09-25", False, ()),
    ("XRP", "엑스알피(리플)", "XRP", "KRW", 3_000, 70_000, "2017-09-25", False, ()),
    ("SOL", "솔라나", "Solana", "KRW", 260_000, 30_000, "2021-10-14", False, ()),
    ("DOGE", "도지코인", "Dogecoin", "KRW", 330, 40_000, "2021-02-24", False, ()),
    ("ADA", "에이다", "Cardano", "KRW", 1_000, 15_000, "2017-09-29", False, ()),
    ("USDT", "테더", "Tether", "KRW", 1_430, 20_000, "2023-10-18", False, ()),
    ("LINK", "체인링크", "Chainlink", "KRW", 25_000, 5_000, "2020-02-28", False, ()),
    ("TRX", "트론", "TRON", "KRW", 420, 5_000, "2018-04-05", False, ()),
    ("SHIB", "시바이누", "Shiba Inu", "KRW", 0.019, 8_000, "2023-06-15", False, ()),
    ("XLM", "스텔라루멘", "Stellar Lumens", "KRW", 480, 3_000, "2017-09-29", False, ()),
    (
        "SAND",
        "샌드박스",
        "The Sandbox",
        "KRW",
        380,
        2_500,
        "2020-08-03",
        False,
        ("TRADING_VOLUME_SOARING",),
    ),
    ("BTT", "비트토렌트", "BitTorrent", "KRW", 0.0013, 1_500, "2021-12-06", False, ()),
    ("MBL", "무비블록", "MovieBloc", "KRW", 3.9, 600, "2019-08-13", False, ()),
    ("MVL", "엠블", "MVL", "KRW", 5.2, 300, "2019-09-05", True, ()),
    (
        "HUNT",
        "헌트",
        "HUNT",
        "KRW",
        55,
        200,
        "2019-06-18",
        False,
        ("PRICE_FLUCTUATIONS", "CONCENTRATION_OF_SMALL_ACCOUNTS"),
    ),
    ("MOC", "모스코인", "Moss Coin", "KRW", 0.68, 40, "2019-11-07", False, ()),
    ("AHT", "아하토큰", "AhaToken", "KRW", 7.5, 12, "2019-05-14", False, ()),
    ("META", "메타디움", "Metadium", "KRW", 42, 6, "2020-06-02", True, ("PRICE_FLUCTUATIONS",)),
    ("WAL", "월루스", "Walrus", "KRW", 640, 900, "2026-10-20", False, ()),
    ("MIRA", "미라", "Mira", "KRW", 820, 500, "2026-11-03", False, ("DEPOSIT_AMOUNT_SOARING",)),
    ("ETH", "이더리움", "Ethereum", "BTC", 0.035, 2_000, "2017-09-25", False, ()),
    ("XRP", "엑스알피(리플)", "XRP", "BTC", 0.00003, 1_200, "2017-09-25", False, ()),
    ("SOL", "솔라나", "Solana", "BTC", 0.0026, 300, "2021-10-14", False, ()),
    ("DOGE", "도지코인", "Dogecoin", "BTC", 0.0000033, 40, "2021-02-24", False, ()),
    (
        "LINK",
        "체인링크",
        "Chainlink",
        "BTC",
        0.00025,
        8,
        "2019-03-12",
        False,
        ("GLOBAL_PRICE_DIFFERENCES",),
    ),
    ("BTC", "비트코인", "Bitcoin", "USDT", 70_000, 3_000, "2018-12-12", False, ()),
    ("ETH", "이더리움", "Ethereum", "USDT", 2_450, 1_000, "2018-12-12", False, ()),
    ("XRP", "엑스알피(리플)", "XRP", "USDT", 2.1, 300, "2018-12-12", False, ()),
    ("DOGE", "도지코인", "Dogecoin", "USDT", 0.23, 20, "2021-02-24", False, ()),
)

# Markets of the table that Upbit delisted in the past (kept in the history before that day):
# backtests over them are what survivorship bias leaves out.
_DELISTED: dict[str, str] = {
    "KRW-MVL": "2026-04-16",
    "KRW-HUNT": "2026-06-25",
    "BTC-DOGE": "2025-12-08",
}
# The latest seeded delisting of a generated market: later ones would fall into the
# simulated present of the tests.
_LAST_GENERATED_DELISTING = "2026-06-30"

_SYLLABLES = ("KA", "LO", "MI", "NU", "RE", "SA", "TO", "VI", "ZE", "QU", "DA", "PO")


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _day_ms(date: str) -> int:
    year, month, day = (int(part) for part in date.split("-"))
    return days_from_civil(year, month, day) * DAY_MS


def _generated_row(n: int) -> _Row:
    """The ``n``-th extra market (n >= 0): a made-up coin with varied price, liquidity,
    quote and listing date, all from a hash of ``n``."""
    h = _hash64(f"generated-market-{n}")
    name = "".join(_SYLLABLES[(h >> (4 * i)) % len(_SYLLABLES)] for i in range(2)) + str(n)
    quote = ("KRW", "KRW", "BTC", "USDT")[(h >> 8) % 4]
    magnitude = ((h >> 12) % 1000) / 1000  # 0..1 spread over many tick bands
    krw_price = 10 ** (-1.0 + 7.0 * magnitude)
    trades = 10 ** (0.6 + 3.4 * (((h >> 24) % 1000) / 1000))
    year = 2018 + (h >> 36) % 9
    listed = f"{year}-{1 + (h >> 40) % 12:02d}-{1 + (h >> 44) % 28:02d}"
    price = krw_price / _KRW_PER_QUOTE[quote]
    return (name, f"시뮬{n}", f"Simcoin {name}", quote, price, trades, listed, False, ())


def _generated_delisting(n: int, listed_ms: int) -> int | None:
    """About one generated market in eight was delisted 200 to 1,200 days after listing."""
    h = _hash64(f"generated-delisting-{n}")
    if h % 8:
        return None
    delisted_ms = listed_ms + (200 + (h >> 8) % 1000) * DAY_MS
    return delisted_ms if delisted_ms <= _day_ms(_LAST_GENERATED_DELISTING) else None


def _market(row: _Row, region: str, generated: int | None = None) -> SimMarket:
    base, korean, english, quote, price, trades, listed, warning, cautions = row
    fiat = REGION_QUOTES[region][0]
    if quote == "KRW" and fiat != "KRW":
        price = price / _KRW_PER_QUOTE[fiat]
        quote = fiat
    code = f"{quote}-{base}"
    key = _hash64(f"market:{code}")
    liquid = trades >= 10_000
    growth = 0.34 if base == "BTC" else ((key >> 5) % 1000) / 1000 * 0.8 - 0.4
    listed_ms = _day_ms(listed)
    if generated is not None:
        delisted_ms = _generated_delisting(generated, listed_ms)
    else:  # the table names KRW markets; regional sites delist the same coin
        delisted = _DELISTED.get(f"{row[3]}-{base}")
        delisted_ms = None if delisted is None else _day_ms(delisted)
    return SimMarket(
        code=code,
        quote=quote,
        base=base,
        korean_name=None if region == "id" else korean,
        english_name=english,
        listed_ms=listed_ms,
        warning=warning,
        caution={flag: flag in cautions for flag in CAUTION_FLAGS},
        key=key,
        trades_per_day=float(trades),
        ref_price=float(price),
        growth=growth,
        volatility=0.035 if liquid else 0.07,
        trade_notional=_TRADE_KRW * (1.0 if liquid else 0.2) / _KRW_PER_QUOTE[quote],
        delisted_ms=delisted_ms,
    )


def universe(region: str, count: int) -> tuple[SimMarket, ...]:
    """The first ``count`` markets of ``region`` (kr, sg, id or th), most liquid first.

    Raises InvalidRequestError for an unknown region or a count below 1.
    """
    if region not in REGION_QUOTES:
        raise InvalidRequestError(
            f"unknown region {region!r}: accepted are {', '.join(REGION_QUOTES)}"
        )
    if count < 1:
        raise InvalidRequestError(f"market count must be at least 1, got {count}")
    table = [_market(row, region) for row in _TABLE[:count]]
    extra = max(0, count - len(table))
    return (*table, *(_market(_generated_row(n), region, n) for n in range(extra)))
