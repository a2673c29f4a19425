"""Fixtures of the serve tests (helpers in ``serve_support``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
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
