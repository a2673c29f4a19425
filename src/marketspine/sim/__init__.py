"""marketspine sim: a faithful, deterministic offline Upbit quotation API (REST + WebSocket).

``create_app(SimConfig(...))`` gives an ASGI app for in-process tests
(``httpx.ASGITransport(app=...)``); ``running(...)`` serves one on a background thread for a
``with`` block; ``serve(...)`` runs it on a port until stopped (``marketspine sim``). Those
two generate history pages on a worker thread, so arrivals are counted as they come;
``create_app`` keeps them on the event loop unless ``pages_off_loop=True``.

The names load on first use, so importing the package costs nothing until one is used.
The simulator takes Upbit's protocol (rows, formats, limits, texts) from ``_upbit``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._base.extras import need

if TYPE_CHECKING:
    from ._app import SERVER_OPTIONS as SERVER_OPTIONS
    from ._app import create_app as create_app
    from ._app import running as running
    from ._app import serve as serve
    from ._history import History as History
    from ._state import Faults as Faults
    from ._state import SimClock as SimClock
    from ._state import SimConfig as SimConfig
    from ._state import SimState as SimState

# name -> the private module that defines it
_HOME = {
    "SERVER_OPTIONS": "_app",
    "create_app": "_app",
    "running": "_app",
    "serve": "_app",
    "History": "_history",
    "Faults": "_state",
    "SimClock": "_state",
    "SimConfig": "_state",
    "SimState": "_state",
}

# The server and the generator need the 'sim' extra (starlette, uvicorn, numpy); the
# configuration and clock do not.
_NEEDS_EXTRA = {"_app", "_history"}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'marketspine.sim' has no attribute {name!r}")
    if home in _NEEDS_EXTRA:
        need("sim")  # one line naming the extra rather than numpy's or starlette's ImportError
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
