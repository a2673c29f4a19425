"""marketspine sim: a faithful, deterministic offline Upbit quotation API (REST + WebSocket).

``create_app(SimConfig(...))`` gives an ASGI app for in-process tests
(``httpx.ASGITransport(app=...)``); ``serve(...)`` runs it on a port (``marketspine sim``).
"""

from __future__ import annotations

from ._app import create_app, serve
from ._history import History
from ._state import Faults, SimClock, SimConfig, SimState

__all__ = ["Faults", "History", "SimClock", "SimConfig", "SimState", "create_app", "serve"]
