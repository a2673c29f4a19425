"""What one running simulator holds: its history, its clock, its fault settings, its counters.

Handlers reach it as ``request.app.state.sim`` (a ``SimState``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .._base.time import now_ms as wall_ms
from ..errors import InvalidRequestError

if TYPE_CHECKING:
    from ._history import History
    from ._universe import SimMarket

__all__ = ["REGIONS", "Faults", "SimClock", "SimConfig", "SimState", "Stats"]

REGIONS = ("kr", "sg", "id", "th")


@dataclass
class Faults:
    """Fault settings, changeable at run time through ``POST /sim/faults``."""

    latency_ms: float = 0.0  # added to every REST answer
    jitter_ms: float = 0.0  # up to this much more, at random
    error_rate: float = 0.0  # share of REST requests answered with a 5xx
    hang_rate: float = 0.0  # share of REST requests never answered
    rate_limit: int = 10  # requests/s per group per client; 0 = unlimited
    ws_drop_every_s: float = (
        0.0  # each socket is cut N s after it opened (no close frame); 0 = never
    )
    # every N s (a simulator-wide schedule, independent of drops) the open sockets go
    # silent: no data, no pongs; 0 = never
    ws_stall_every_s: float = 0.0
    ws_idle_timeout_s: float = 120.0  # close sockets that neither sent nor received for this long
    # added to the first request of each new connection: its TCP and TLS handshakes, about
    # two round trips at a distance (the simulator itself speaks plain HTTP)
    connect_ms: float = 0.0

    def update(
        self, changes: dict[str, Any], *, label: Callable[[str], str] = "fault setting {!r}".format
    ) -> None:
        """Apply ``changes`` (field name → value); raises InvalidRequestError on unknown
        names or values of the wrong type, sign or range, changing nothing in that case.
        The message names a setting as ``label(name)`` (the CLI passes its flag names), the
        value given and the range accepted."""
        known = {f.name: f.type for f in fields(self)}
        staged: dict[str, float | int] = {}
        for name, value in changes.items():
            if name not in known:
                raise InvalidRequestError(
                    f"unknown fault setting {name!r}: accepted are {', '.join(known)}"
                )
            share = name.endswith("_rate")
            accepted = "a share between 0 and 1" if share else "a number >= 0"
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if number and not share and not math.isfinite(value):
                accepted = "a finite number >= 0"
            # NaN passes every comparison, and an infinite latency or share is no setting.
            if not number or not math.isfinite(value) or value < 0 or (share and value > 1):
                raise InvalidRequestError(f"{label(name)} must be {accepted}, got {_shown(value)}")
            staged[name] = int(value) if name == "rate_limit" else float(value)
        for name, value in staged.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimConfig:
    """How to start a simulator. Same ``seed`` ⇒ the same market history everywhere."""

    seed: int = 1
    region: str = "kr"
    markets: int = 30
    speed: float = 1.0
    rate_limit: int = 10
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    hang_rate: float = 0.0
    ws_drop_every_s: float = 0.0
    ws_stall_every_s: float = 0.0
    ws_idle_timeout_s: float = 120.0
    connect_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise InvalidRequestError(
                f"unknown region {self.region!r}: accepted are {', '.join(REGIONS)}"
            )
        if not 1 <= self.markets <= 1000:
            raise InvalidRequestError(f"--markets must be 1..1000, got {self.markets}")
        if not (math.isfinite(self.speed) and self.speed > 0):  # NaN is not > 0 either
            raise InvalidRequestError(f"--speed must be a number > 0, got {_shown(self.speed)}")
        self.faults()  # validates the fault fields

    def faults(self) -> Faults:
        """The starting fault settings (validated; an error names the ``sim`` flag)."""
        faults = Faults()
        faults.update({f.name: getattr(self, f.name) for f in fields(Faults)}, label=_flag)
        return faults


def _flag(name: str) -> str:
    """The ``marketspine sim`` flag that sets the field ``name``."""
    return "--" + name.replace("_", "-")


def _shown(value: object) -> str:
    """``value`` as the user typed it: 2 rather than click's 2.0, nan, 'slow' quoted."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


class SimClock:
    """Simulated time in UTC epoch ms: the wall clock, running ``speed`` times faster from
    the moment the clock was made. History depends only on absolute time, never on when
    the simulator started."""

    def __init__(self, speed: float = 1.0, *, start_ms: int | None = None) -> None:
        self._speed = speed
        self._start_ms = wall_ms() if start_ms is None else start_ms
        self._start_mono = time.monotonic()

    def __call__(self) -> int:
        elapsed = time.monotonic() - self._start_mono
        return self._start_ms + int(elapsed * 1000 * self._speed)


@dataclass
class Stats:
    """Counters behind ``GET /sim/stats``; ``POST /sim/reset`` zeroes them."""

    by_group: Counter[str] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    hung: int = 0
    connections: int = 0  # REST connections seen (a new client address and port)
    ws_connections: int = 0
    ws_drops: int = 0  # sockets cut by ws_drop_every_s
    ws_stalls: int = 0  # sockets stalled by ws_stall_every_s
    ws_idle_cuts: int = 0  # sockets cut by ws_idle_timeout_s (stalled ones included)
    ws_open: int = 0
    ws_messages_sent: int = 0
    ws_messages_received: int = 0

    def count_request(self, group: str | None, path: str) -> None:
        if group is not None:
            self.by_group[group] += 1
        self.by_path[path] += 1

    def reset(self) -> None:
        open_now = self.ws_open
        self.__init__()  # type: ignore[misc]
        self.ws_open = open_now  # sockets still open stay counted as open

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {
                "total": sum(self.by_path.values()),
                "by_group": dict(self.by_group),
                "by_path": dict(self.by_path),
            },
            "status": {str(code): n for code, n in sorted(self.by_status.items())},
            "429": self.by_status[429],
            "418": self.by_status[418],
            "hung": self.hung,
            "connections": self.connections,
            "websocket": {
                "connections": self.ws_connections,
                "open": self.ws_open,
                "messages_sent": self.ws_messages_sent,
                "messages_received": self.ws_messages_received,
                "drops": self.ws_drops,
                "stalls": self.ws_stalls,
                "idle_cuts": self.ws_idle_cuts,
            },
        }


@dataclass
class SimState:
    """One simulator's state: what every REST handler and WebSocket connection shares."""

    config: SimConfig
    history: History
    clock: Callable[[], int]
    faults: Faults
    stats: Stats = field(default_factory=Stats)
    # Markets delisted at run time (POST /sim/delist): code -> simulated ms.
    delisted: dict[str, int] = field(default_factory=dict)
    # The stall schedule starts over whenever ws_stall_every_s changes (real seconds).
    _stall_every_s: float = field(default=0.0, repr=False)
    _stall_epoch_s: float = field(default=0.0, repr=False)

    def now_ms(self) -> int:
        return self.clock()

    def delisted_ms(self, code: str) -> int | None:
        """When market ``code`` leaves (or left) Upbit, in simulated ms; None = never."""
        market = self.history.market(code)
        seeded = None if market is None else market.delisted_ms
        runtime = self.delisted.get(code)
        if seeded is None or runtime is None:
            return seeded if runtime is None else runtime
        return min(seeded, runtime)

    def is_listed(self, market: SimMarket, now_ms: int) -> bool:
        """Whether ``market`` is on Upbit at ``now_ms``: listed and not yet delisted."""
        if market.listed_ms > now_ms:
            return False
        gone = self.delisted_ms(market.code)
        return gone is None or now_ms < gone

    def next_stall_s(self, after_s: float) -> float | None:
        """The first moment (``time.monotonic()``) after ``after_s`` at which open sockets
        stall, or None when stalls are off. Stalls come every ``ws_stall_every_s`` from
        when that setting was made, whatever the age of a socket: drops, which reset
        the age, cannot postpone them."""
        every = self.faults.ws_stall_every_s
        if every <= 0:
            return None
        if every != self._stall_every_s:
            self._stall_every_s, self._stall_epoch_s = every, time.monotonic()
        periods = max(1, int((after_s - self._stall_epoch_s) // every) + 1)
        return self._stall_epoch_s + periods * every
