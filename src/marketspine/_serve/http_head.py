"""A bound on a request's head for uvicorn's httptools protocol (its HTTP parser in C), which
serve and the simulator run on when httptools is installed (``server_thread``); without it
uvicorn parses with h11.

h11 keeps a request line and headers within 16 KiB and answers 400 past that. httptools has no
such bound: a client could send headers until the process ran out of memory (a 100 MB header
was taken whole). ``BoundedHttpTools`` counts the bytes received while a request's head is
incomplete and answers 431 (Request Header Fields Too Large) and closes past the same 16 KiB.
The body is not counted here: ``security.BodyLimit`` bounds it.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpTools"]

MAX_HEAD_BYTES = 16 * 1024  # h11's bound, which serve kept before httptools


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose head passes ``MAX_HEAD_BYTES``.

    The count starts with the connection and after each request's end and stops once the
    head is complete: a body (``security.BodyLimit``'s) or the next request in the same read
    is parsed past the bound only once the head has ended within it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._heads = 0  # heads parsed whole on this connection

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if len(data) > MAX_HEAD_BYTES - self._head_bytes:
                self._past_bound(data)
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def _past_bound(self, data: bytes) -> None:
        """Refuse, unless the head ends within the bound (a body or the next request may
        follow in the same read): parse up to the bound, then see."""
        if self.transport.is_closing():
            return
        room = MAX_HEAD_BYTES - self._head_bytes
        heads = self._heads
        if room > 0:
            self._head_bytes += room
            super().data_received(data[:room])
            if self.transport.is_closing():  # refused by the parser (400)
                return
        if self._heads == heads:
            self._refuse_head()
        elif self.transport.get_protocol() is self:  # not upgraded to a WebSocket
            self.data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _refuse_head(self) -> None:
        message = f"request line and headers over {MAX_HEAD_BYTES} bytes".encode()
        self.logger.warning(
            "HTTP request refused: its line and headers passed %d bytes", MAX_HEAD_BYTES
        )
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(message),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + message)
        self.transport.close()
