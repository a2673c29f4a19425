"""Where the database lives when no ``db``/``--db`` is given.

Real Upbit candles go to ``marketspine.db`` in the user data directory. Every other upstream
(a simulator, a regional Upbit site, a test server) gets a file of its own, named after its
host and port: a store records what it holds as covered and never fetches it again, so
simulated candles written into the real database would stand in for real ones for good.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DEFAULT_UPSTREAM", "default_db_path", "sibling_hint"]

DEFAULT_UPSTREAM = "https://api.upbit.com"


def default_db_path(upstream: str = DEFAULT_UPSTREAM) -> Path:
    """``marketspine.db`` in the user data directory for api.upbit.com;
    ``marketspine-HOST_PORT.db`` beside it for any other upstream (``marketspine-sim.db``
    for serve's in-process simulator)."""
    from platformdirs import user_data_dir

    folder = Path(user_data_dir("marketspine"))
    return folder / f"marketspine{_suffix(upstream)}.db"


def _suffix(upstream: str) -> str:
    if upstream == "sim":
        return "-sim"
    parts = urlsplit(upstream.strip().rstrip("/"))
    if (parts.scheme, parts.netloc.lower(), parts.path) in {
        ("https", "api.upbit.com", ""),
        ("https", "api.upbit.com:443", ""),
    }:
        return ""
    name = (parts.netloc or upstream).lower().replace(":", "_") + parts.path.replace("/", "_")
    return "-" + (re.sub(r"[^a-z0-9._-]+", "_", name).strip("_.") or "upstream")


def sibling_hint(db: str | Path) -> str:
    """When ``db`` is the default database, a note naming the other upstreams' default
    databases beside it (a newcomer who collected from a simulator finds them); else ``""``."""
    path = Path(db).expanduser()
    if path != default_db_path():
        return ""
    others = sorted(p.name for p in path.parent.glob("marketspine-*.db"))
    if not others:
        return ""
    return f" (beside it, other upstreams' databases: {', '.join(others)}; pass --db to read one)"
