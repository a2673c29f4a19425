"""Fixtures of the serve tests (helpers in ``serve_support`` and ``browser_support``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_support import CHROMIUM, WAIT_MS, browser_missing
from serve_support import TOKEN, ServeProcess, serve_process


@pytest.fixture
def start_serve() -> Callable[..., contextlib.AbstractContextManager[ServeProcess]]:
    """``serve_process(upstream, db, *extra, env=None)``."""
    return serve_process


@pytest.fixture(scope="module")
def serve(fixed_sim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One serve process in front of ``fixed_sim``, shared by a module's tests."""
    db = tmp_path_factory.mktemp("serve") / "serve.db"
    with serve_process(fixed_sim, db, "--admin-token", TOKEN) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the module's tests (each test has its own context)."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("MARKETSPINE_REQUIRE_BROWSER"):
            pytest.fail(f"MARKETSPINE_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    # expect() has its own 5 s default, which a loaded machine can exceed while a page
    # parses plotly.js.
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()
