"""Debian's chromium driven by Playwright, for the browser tests (the ``browser`` fixture in
``conftest``): where it is, how long a page may take, and why it cannot run here.

Without chromium or Playwright a browser test skips with the reason; under
``MARKETSPINE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("MARKETSPINE_CHROMIUM", "/usr/bin/chromium"))
# A page's deadline for anything it waits on: a loaded machine can take seconds to parse
# plotly.js; the deadline bounds failures only.
WAIT_MS = 30_000


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set MARKETSPINE_CHROMIUM)"
    return None
