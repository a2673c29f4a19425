"""A loopback HTTP receiver for apprise's ``json://127.0.0.1:PORT/`` notifications: it keeps
every message posted to it, and answers ``status`` (set 500 to play a failing notifier)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any


class Receiver:
    """What the receiver got (``messages``: the JSON bodies, in order) and will answer."""

    def __init__(self, port: int) -> None:
        self.url = f"json://127.0.0.1:{port}/"
        self.messages: list[dict[str, Any]] = []
        self.status = 200
        self.got = threading.Condition()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The messages, once at least ``count`` came (AssertionError after ``timeout``)."""
        with self.got:
            if not self.got.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"{len(self.messages)} of {count} messages came")
            return list(self.messages)


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port, in a thread, for a ``with`` block."""
    box: list[Receiver] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got = box[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if got.status == 200:
                with got.got:
                    got.messages.append(json.loads(body))
                    got.got.notify_all()
            self.send_response(got.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # quiet in test output
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
