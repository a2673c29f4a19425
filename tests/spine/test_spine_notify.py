"""``Spine(notify=...)``: alerts while open (a failing exchange's warmup reaches a loopback
apprise ``json://`` receiver), nothing attached after ``aclose``, bad URLs refused up front."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from clitools import closed_port
from receiver import receiver

from marketspine import Spine
from marketspine._spine.notify import NotifyHandler
from marketspine.errors import InvalidRequestError


async def test_a_failed_warmup_alerts_while_the_spine_is_open(
    fixed_sim: str, tmp_path: Path
) -> None:
    with receiver() as got:
        exchanges = {"upbit": fixed_sim, "down": closed_port()}
        async with Spine(
            fixed_sim, tmp_path / "s.db", exchanges=exchanges, notify=[got.url]
        ) as spine:
            report = await spine.warmup()
            assert report["refreshed_exchanges"] == ["upbit"]
        alerts = [m for m in got.wait_for(1) if m["title"] == "marketspine: warmup failed"]
        assert alerts and alerts[0]["message"].startswith("warmup of down (")
    handlers = logging.getLogger("marketspine").handlers
    assert not any(isinstance(h, NotifyHandler) for h in handlers)


def test_a_notify_url_apprise_cannot_parse_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="invalid notify URL"):
        Spine("http://127.0.0.1:9", tmp_path / "s.db", notify="nosuch://x")
