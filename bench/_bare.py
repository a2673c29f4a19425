"""The yardstick for ``bench serve``: a bare uvicorn + Starlette endpoint that returns a fixed
body, configured as ``marketspine serve`` runs uvicorn. ``python -m bench._bare BODYFILE
[HEADERSFILE]`` prints ``serving on URL`` and serves ``GET /body`` until stopped; with
``HEADERSFILE`` (a JSON list of ``[name, value]`` pairs) the answer carries those headers too."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def main(body_file: str, headers_file: str | None = None) -> None:
    body = Path(body_file).read_bytes()
    headers = dict(json.loads(Path(headers_file).read_text())) if headers_file else None

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type="application/json", headers=headers)

    app = Starlette(routes=[Route("/body", endpoint)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            print(f"serving on {url}", flush=True)

    # As serve runs it: without uvicorn's proxy-headers layer (serve adds it only for
    # --forwarded-allow-ips).
    config = uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=False)
    server = _Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


if __name__ == "__main__":
    main(*sys.argv[1:3])
