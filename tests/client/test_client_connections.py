"""The client keeps an idle connection to upstream for reuse longer than httpx's 5 s: a
request polled every few seconds from far from Seoul would otherwise pay TCP and TLS
handshakes each time (two round trips more). Against the simulator on a loopback socket,
which tells connections apart and charges a new one ``connect_ms``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from helpers import run_sim

from marketspine import Client
from marketspine.errors import InvalidRequestError
from marketspine.sim import SimConfig


async def test_a_request_after_an_idle_gap_past_httpxs_default_reuses_the_connection() -> None:
    with run_sim(SimConfig(rate_limit=0, connect_ms=300)) as base:
        async with Client(base) as client:
            await client.tickers(["KRW-BTC"])
            # The idle gap itself is what is tested: nothing to wait on but time.
            await asyncio.sleep((httpx.Limits().keepalive_expiry or 5.0) + 1.0)
            await client.tickers(["KRW-BTC"])
        async with httpx.AsyncClient(base_url=base) as http:
            stats = (await http.get("/sim/stats")).json()
    assert stats["requests"]["by_path"] == {"/v1/ticker": 2}
    assert stats["connections"] == 1  # the handshakes (300 ms here) paid once


async def test_ca_certificates_that_cannot_be_loaded_are_named_with_their_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was "[Errno 2] No such file or directory" alone, naming neither the file nor why.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(InvalidRequestError, match=r"SSL_CERT_FILE=\S*missing\.pem.*No such file"):
        async with Client("https://127.0.0.1:9"):
            pass
