"""marketspine sim: a faithful, deterministic offline Upbit quotation API (REST + WebSocket).

``create_app(SimConfig(...))`` gives an ASGI app for in-process tests
(``httpx.ASGITransport(app=...)``); ``running(...)`` serves one on a background thread for a
``with`` block; ``serve(...)`` runs it on a port until stopped (``marketspine sim``).
"""

from __future__ import annotations

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
