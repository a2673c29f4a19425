"""One downstream client of an Upbit-protocol WebSocket, as ``serve`` (``upbit_ws``) and
``replay`` (``replay_ws``) both keep it: its format and subscription (each pair's rendering
worked out once, not per event), the snapshots it is still owed, its request pacing (Upbit's
5/s and 100/min per connection), ``LIST_SUBSCRIPTIONS`` and the ``{"status":"UP"}`` a
``PING`` starts. No I/O: how frames leave (``send``) is each server's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._live.subscriptions import MessagePacer
from .._upbit.limits import MAX_BOOK_LEVELS
from .._upbit.ws_format import (
    STATUS_UP,
    ListRequest,
    SubscribeRequest,
    WsRequestError,
    error_message,
    list_message,
    parse_request,
)
from .ws_format import ClientStream, listing
from .ws_frames import RawFrames, binary_frame
from .ws_hub import Pair, Rendered, Variant

__all__ = ["STATUS_EVERY_S", "WsClient", "is_ping", "request_data"]

STATUS_EVERY_S = 10.0  # {"status":"UP"} period after a text PING, as on Upbit
_encoder = msgspec.json.Encoder()


def request_data(message: Mapping[str, Any]) -> str | bytes | None:
    """The text or bytes of one ASGI ``websocket.receive`` message (None: neither)."""
    text = message.get("text")
    data = text if text is not None else message.get("bytes")
    return data if isinstance(data, str | bytes) else None


def is_ping(data: str | bytes) -> bool:
    """Whether a client message is Upbit's text ``PING`` (not a request)."""
    return data.strip() in ("PING", b"PING")


@dataclass(eq=False, slots=True, kw_only=True)
class WsClient:
    """The protocol state of one connection; a subclass says how frames are sent (``send``).

    ``raw`` writes whole frames straight to the socket when the server runs so
    (``ws_frames``): events are then offered as pre-built frames, else as messages.
    """

    raw: RawFrames | None = None
    format: str = "DEFAULT"
    streams: dict[str, ClientStream] = field(default_factory=dict)
    # pair -> (its realtime variant, whether realtime frames are wanted): see ``configure``
    routes: dict[Pair, tuple[Variant, bool]] = field(default_factory=dict)
    pending: set[Pair] = field(default_factory=set)  # snapshots still owed
    pacer: MessagePacer = field(default_factory=lambda: MessagePacer(margin=0.0))
    status_next: float | None = None  # when the next {"status":"UP"} is due (after a PING)

    @property
    def simple(self) -> bool:
        return self.format.startswith("SIMPLE")

    @property
    def listed(self) -> bool:
        return self.format.endswith("_LIST")

    def send(self, data: bytes) -> None:
        """Send or queue ``data`` (a whole frame when ``raw`` is set, else a message)
        without waiting."""
        raise NotImplementedError

    def configure(self, format: str, streams: dict[str, ClientStream]) -> None:
        """Take a new format and subscription; each pair's realtime variant is worked out
        here once, not per event and client."""
        self.format, self.streams = format, streams
        simple, listed = self.simple, self.listed
        self.routes = {
            (s.kind, code): (
                (simple, "REALTIME", depth or MAX_BOOK_LEVELS, s.level, listed),
                s.realtime,
            )
            for s in streams.values()
            for code, depth in s.codes.items()
        }

    def pairs(self) -> set[Pair]:
        return set(self.routes)

    def offer(self, pair: Pair, rendered: Rendered) -> None:
        """Send an event of ``pair``: as the snapshot still owed (the freshest state is the
        snapshot), else as realtime unless the client asked for snapshots only."""
        route = self.routes.get(pair)
        if route is None:
            return
        variant, realtime = route
        if self.pending and pair in self.pending:
            self.pending.discard(pair)
            variant = (variant[0], "SNAPSHOT", *variant[2:])
        elif not realtime:
            return
        # The frame is built once and the same bytes written to every client alike.
        self.send(rendered.frame(variant) if self.raw is not None else rendered.get(variant))

    def push(self, message: bytes, *, listed: bool = True) -> None:
        """Send one message (in the LIST formats' JSON array unless ``listed`` is False)."""
        # The LIST formats carry messages in JSON arrays; one message per frame here.
        data = b"[" + message + b"]" if listed and self.listed else message
        self.send(data if self.raw is None else binary_frame(data))

    def ping(self, now: float) -> None:
        """Answer a ``PING``: ``{"status":"UP"}`` now, then every STATUS_EVERY_S."""
        self.push(STATUS_UP)
        self.status_next = now + STATUS_EVERY_S

    def beat(self, now: float) -> None:
        """Send the ``{"status":"UP"}`` due by ``now``, if one is."""
        if self.status_next is not None and now >= self.status_next:
            self.status_next += STATUS_EVERY_S
            self.push(STATUS_UP)

    def parse(self, data: str | bytes, now: float) -> SubscribeRequest | ListRequest:
        """One request, counted against the pacing limit; raises ``WsRequestError`` for a
        request over the limit or malformed (answer it with ``refuse``)."""
        if self.pacer.delay(now) > 0:
            raise WsRequestError("TOO_MANY_REQUESTS")
        self.pacer.record(now)
        return parse_request(data)

    def refuse(self, error: WsRequestError) -> None:
        """Send the error frame of a refused request (Upbit then closes the connection)."""
        self.push(error_message(error), listed=False)

    def list_subscriptions(self, request: ListRequest) -> None:
        """Answer ``LIST_SUBSCRIPTIONS``: take its format (if it names one), send the
        listing. The pairs stay; their variants change with the format."""
        self.configure(request.format or self.format, self.streams)
        rows = listing(self.streams)
        self.push(_encoder.encode(list_message(self.simple, request.ticket, rows)))
