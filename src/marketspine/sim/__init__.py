"""marketspine sim: a faithful, deterministic offline Upbit quotation API (REST + WebSocket).

``create_app(SimConfig(...))`` gives an ASGI app for in-process tests
(``httpx.ASGITransport(app=...)``); ``running(...)`` serves one on a background thread for a
``with`` block; ``serve(...)`` runs it on a port until stopped (``marketspine sim``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import SERVER_OPTIONS, create_app, running, serve
    from ._history import History
    from ._state import Faults, SimClock, SimConfig, SimState

__all__ = [
    "SERVER_OPTIONS",
    "Faults",
    "History",
    "SimClock",
    "SimConfig",
    "SimState",
    "create_app",
    "running",
    "serve",
]

# Loaded on first use: ``serve`` parses WebSocket requests with ``sim._ws_format`` and must
# not pay for the whole simulator (numpy, market history) at start-up.
_HOME = {
    "SERVER_OPTIONS": "._app",
    "create_app": "._app",
    "running": "._app",
    "serve": "._app",
    "History": "._history",
    "Faults": "._state",
    "SimClock": "._state",
    "SimConfig": "._state",
    "SimState": "._state",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
