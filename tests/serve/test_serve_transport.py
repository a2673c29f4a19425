"""serve's upstream transport waits for its TLS context (loaded on a thread at start-up)
only at the first request; a context that cannot be loaded is a connection error there."""

from __future__ import annotations

import concurrent.futures
import ssl

import httpx
import pytest

from marketspine._serve.app import _TransportOnceTlsReady


async def test_the_first_request_uses_the_context_loaded_meanwhile(sim_url: str) -> None:
    tls: concurrent.futures.Future[ssl.SSLContext] = concurrent.futures.Future()
    transport = _TransportOnceTlsReady(tls)
    tls.set_result(httpx.create_ssl_context())
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(sim_url + "/v1/market/all")
    assert response.status_code == 200


async def test_a_context_that_cannot_be_loaded_fails_the_request_as_a_connect_error() -> None:
    tls: concurrent.futures.Future[ssl.SSLContext] = concurrent.futures.Future()
    tls.set_exception(FileNotFoundError(2, "No such file or directory", "/nowhere.pem"))
    async with httpx.AsyncClient(transport=_TransportOnceTlsReady(tls)) as client:
        with pytest.raises(httpx.ConnectError, match="cannot load CA certificates"):
            await client.get("https://api.upbit.com/v1/market/all")
