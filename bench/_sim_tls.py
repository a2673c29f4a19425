"""The simulator over TLS with HTTP/2 offered (hypercorn), as api.upbit.com serves it, in a
process of its own: ``python -m bench._sim_tls DIR`` writes a test CA and a certificate for
127.0.0.1 (trustme) into DIR and prints ``URL CA-FILE`` once it listens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

from marketspine.sim import SimConfig, create_app


def main(directory: Path) -> None:
    ca = trustme.CA()
    cert, ca_file = directory / "server.pem", directory / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_file))
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn closes it
    config.certfile = config.keyfile = str(cert)
    config.accesslog = config.errorlog = None
    config.keep_alive_timeout = 75  # as `marketspine sim` keeps an idle connection
    print(f"https://127.0.0.1:{port} {ca_file}", flush=True)  # connections queue till served
    # hypercorn types its ASGI app narrower than Starlette declares itself.
    app: Any = create_app(SimConfig(), pages_off_loop=True)
    asyncio.run(serve(app, config))


@contextlib.contextmanager
def tls_simulator() -> Iterator[str]:
    """The simulator over TLS for the block; yields its base URL. This process trusts the
    test CA meanwhile (``SSL_CERT_FILE``, which httpx reads)."""
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._sim_tls", directory],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2:
            proc.kill()
            raise RuntimeError(f"the TLS simulator did not print its URL: {line!r}")
        url, ca_file = line
        previous = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = ca_file
        try:
            yield url
        finally:
            if previous is None:
                del os.environ["SSL_CERT_FILE"]
            else:
                os.environ["SSL_CERT_FILE"] = previous
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
