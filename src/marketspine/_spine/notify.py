"""Alerts to the operator and logs an operator can read, over the standard ``logging`` bus.

Where something worth an alert happens, the code logs one readable line with
``extra={"event": KIND, "key": WHAT, ...details}``. ``NotifyHandler`` forwards those records
to apprise (Telegram, Slack, Discord, e-mail, ntfy, JSON webhooks) from its own thread,
folding repeats of one (event, key) into one message per minute with a count, so a flapping
circuit never floods a phone, and a slow or failing notifier never holds up the work.
``RedactFilter`` takes secrets out of every record; ``JsonFormatter`` writes one JSON object
per line for log shippers. apprise is imported only when a handler is made.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError

__all__ = [
    "NOTIFY_LOGGER",
    "JsonFormatter",
    "NotifyHandler",
    "RedactFilter",
    "attach_notify",
    "check_notify_urls",
    "detach_notify",
    "event_details",
    "notify_secrets",
    "send_test",
    "shown_notify_url",
    "split_notify_urls",
]

# The handler's own troubles go here; it ignores records from it, so it never loops.
NOTIFY_LOGGER = "marketspine.notify"
_log = logging.getLogger(NOTIFY_LOGGER)

DEFAULT_WINDOW_S = 60.0
DEFAULT_QUEUE_SIZE = 256
SEND_TIMEOUT_S = 10.0

# Every attribute a plain LogRecord has: whatever else a record carries came in ``extra``.
_PLAIN_RECORD = logging.LogRecord("", 0, "", 0, "", None, None)
_RECORD_ATTRS = frozenset(vars(_PLAIN_RECORD)) | {"message", "asctime", "taskName"}
_NOT_DETAILS = frozenset({"event", "key"})


def event_details(record: logging.LogRecord) -> dict[str, Any]:
    """The details a record was logged with (its ``extra``, minus ``event`` and ``key``)."""
    return {
        name: value
        for name, value in vars(record).items()
        if name not in _RECORD_ATTRS and name not in _NOT_DETAILS and not name.startswith("_")
    }


def split_notify_urls(values: Iterable[str]) -> list[str]:
    """``--notify`` values and ``MARKETSPINE_NOTIFY``: each may hold several URLs separated
    by commas or whitespace."""
    return [url for value in values for url in re.split(r"[\s,]+", value) if url]


def shown_notify_url(url: str) -> str:
    """A notify URL fit for a log or an error: its scheme only (the rest holds tokens)."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://***" if sep else "***"


def notify_secrets(url: str) -> list[str]:
    """The parts of a notify URL that may be credentials: the whole URL and every piece of
    it at least 6 characters long that is not a plain host name or number of a loopback
    receiver (a bot token, a webhook id, a password)."""
    _, sep, rest = url.partition("://")
    if not sep:
        return [url]
    pieces = [url, rest]
    for piece in re.split(r"[/?&=@:#]+", rest):
        if len(piece) >= 6 and not re.fullmatch(r"[0-9.]+|localhost|[a-z0-9.-]+\.[a-z]{2,}", piece):
            pieces.append(piece)
    return pieces


class RedactFilter(logging.Filter):
    """Replaces ``secrets`` (and any URL's password) with ``***`` in a record's message,
    its string details and its traceback; never drops a record. Install it on handlers."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        # Longest first, so that a whole URL goes before the token inside it.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secrets: Iterable[str | None]) -> None:
        self._secrets = sorted({*self._secrets, *(s for s in secrets if s)}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        # scheme://user:password@host → scheme://user:***@host
        return re.sub(r"(://[^:/@\s]+):[^@\s/]+@", r"\1:***@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        for name, value in event_details(record).items():
            if isinstance(value, str):
                setattr(record, name, self.redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, event and
    key when the record has them, its details, and the traceback as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("event", "key"):
            if hasattr(record, name):
                line[name] = getattr(record, name)
        line.update(event_details(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


@dataclass
class _Alert:
    """One record to forward, as the handler saw it."""

    event: str
    key: str
    levelno: int
    line: str
    details: dict[str, Any]
    at: float  # the handler's clock when logged


@dataclass
class _Folded:
    """One (event, key): when it was last sent, and what came since."""

    sent_at: float
    repeats: int = 0
    latest: _Alert | None = None


@dataclass
class NotifyStatistics:
    sent: int = 0
    failed: int = 0
    dropped: int = 0  # the queue was full
    folded: int = 0  # repeats within the window, told as a count
    per_event: dict[str, int] = field(default_factory=dict)


_STOP = object()  # (a threading.Event in the queue: send what is due, then set it)


class NotifyHandler(logging.Handler):
    """Forwards records that carry an ``event`` to every apprise URL in ``urls``.

    ``emit`` only queues (bounded: when full the record is dropped and counted), so logging
    never waits for the network; one thread sends. Per (event, key) at most one message per
    ``window_s`` of ``clock``: repeats inside the window are folded into one message sent
    when the window ends ("… (3 times in the last 60 s)"). A failed delivery is logged to
    ``marketspine.notify`` (which this handler ignores) and counted; it never raises.
    Raises InvalidRequestError for a URL apprise cannot parse (naming it by scheme only).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        level: int = logging.INFO,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        source: str = "marketspine",
    ) -> None:
        # Checked before Handler.__init__ registers this handler with logging (which flushes
        # every registered handler at exit): a refused URL leaves nothing half made behind.
        self._apprise = _apprise_for(urls)
        super().__init__(level)
        self._window = window_s
        self._clock = clock
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._folded: dict[tuple[str, str], _Folded] = {}
        self.statistics = NotifyStatistics()
        self.restore_level: int | None = None  # the logger's level before attach_notify
        self._worker = threading.Thread(target=self._run, name="notify", daemon=True)
        self._worker.start()

    # -- the logging side (any thread, never blocks) ----------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if not isinstance(event, str) or record.name.startswith(NOTIFY_LOGGER):
            return
        try:
            alert = _Alert(
                event,
                str(getattr(record, "key", "")),
                record.levelno,
                record.getMessage(),
                event_details(record),
                self._clock(),
            )
            self._queue.put_nowait(alert)
        except queue.Full:
            self.statistics.dropped += 1
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Send what is due now and wait (at most a few sends' time) until the queue is
        worked off (tests; the logging module at exit)."""
        if self._worker.is_alive():
            done = threading.Event()
            self._queue.put(done)
            done.wait(timeout=2 * SEND_TIMEOUT_S)

    def close(self) -> None:
        """Nothing to release but the worker, which ``stop`` ends: ``logging.config``
        closes every handler when anyone configures logging (uvicorn does, starting a
        server), and this one must keep sending after that."""
        super().close()

    def stop(self) -> None:
        """Send the folded repeats still waiting, then end the thread (idempotent)."""
        if self._worker.is_alive():
            self._queue.put(_STOP)
            self._worker.join(timeout=2 * SEND_TIMEOUT_S)
        self.close()

    # -- the sending side (the worker thread only) ------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._send_due(self._clock())
                continue
            try:
                if item is _STOP:
                    self._send_due(None)
                    return
                if isinstance(item, _Alert):
                    self._receive(item)
                self._send_due(self._clock())
                if isinstance(item, threading.Event):
                    item.set()
            finally:
                self._queue.task_done()

    def _receive(self, alert: _Alert) -> None:
        name = (alert.event, alert.key)
        folded = self._folded.get(name)
        if folded is not None and alert.at - folded.sent_at < self._window:
            folded.repeats += 1
            folded.latest = alert
            self.statistics.folded += 1
            return
        self._folded[name] = _Folded(sent_at=alert.at)
        self._send(alert, 1)

    def _send_due(self, now: float | None) -> None:
        """Send each folded summary whose window is over (all of them when ``now`` is None),
        oldest latest occurrence first, so that the last state told is the current one."""
        due = [
            folded
            for folded in self._folded.values()
            if folded.latest is not None and (now is None or now - folded.sent_at >= self._window)
        ]
        for folded in sorted(due, key=lambda f: f.latest.at if f.latest else 0.0):
            latest, repeats = folded.latest, folded.repeats
            assert latest is not None
            folded.latest, folded.repeats = None, 0
            folded.sent_at = latest.at if now is None else now
            self._send(latest, repeats + 1)  # the one told before, and the ones since

    def _send(self, alert: _Alert, times: int) -> None:
        apprise = _import_apprise()

        line = alert.line
        if times > 1:
            line += f" ({times} times in {self._window:.0f} s)"
        body = line
        if alert.details:
            body += "\n" + "\n".join(f"{k}: {v}" for k, v in sorted(alert.details.items()))
        kind = (
            apprise.NotifyType.FAILURE
            if alert.levelno >= logging.ERROR
            else apprise.NotifyType.WARNING
            if alert.levelno >= logging.WARNING
            else apprise.NotifyType.INFO
        )
        title = f"{self._source}: {alert.event.replace('_', ' ')}"
        try:
            delivered = bool(
                self._apprise.notify(
                    body=body, title=title, notify_type=kind, timeout=SEND_TIMEOUT_S
                )
            )
        except Exception as exc:  # a notifier's bug must not stop the thread
            delivered = False
            _log.warning("notification %r not delivered: %s", alert.event, exc)
        else:
            if not delivered:
                _log.warning("notification %r not delivered (the notifier refused it)", alert.event)
        if delivered:
            self.statistics.sent += 1
            self.statistics.per_event[alert.event] = (
                self.statistics.per_event.get(alert.event, 0) + 1
            )
        else:
            self.statistics.failed += 1


def _import_apprise() -> Any:
    # apprise 2.3 imports the deprecated imghdr; its warning is no news to an operator.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
    return apprise


def _apprise_for(urls: Sequence[str]) -> Any:
    apprise = _import_apprise()
    if not urls:
        raise InvalidRequestError("no notify URL given")
    # apprise logs each send; its lines hold the URLs, so they stay out of the operator's log.
    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    sender = apprise.Apprise()
    for url in urls:
        with warnings.catch_warnings():  # adding one loads its plugin (imghdr, see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            added = sender.add(url)
        if not added:
            raise InvalidRequestError(
                f"invalid notify URL {shown_notify_url(url)!r}: apprise cannot parse it "
                "(see https://github.com/caronc/apprise/wiki for the URL of each service)"
            )
    return sender


def check_notify_urls(urls: Sequence[str]) -> None:
    """Raise InvalidRequestError for a URL apprise cannot parse (none given: fine)."""
    if urls:
        _apprise_for(urls)


def send_test(urls: Sequence[str], source: str = "marketspine") -> list[str]:
    """Send one test message to each URL now; for each URL it did not reach, the URL by its
    scheme and apprise's reason, secrets hidden (empty: delivered everywhere). Raises
    InvalidRequestError for a URL apprise cannot parse, before sending anything."""
    apprise = _import_apprise()
    senders = [(url, _apprise_for([url])) for url in urls]
    failed = []
    for url, sender in senders:
        with _apprise_warnings() as said:
            delivered = sender.notify(
                body="test message: notifications reach you",
                title=f"{source}: notify test",
                notify_type=apprise.NotifyType.INFO,
                timeout=SEND_TIMEOUT_S,
            )
        if not delivered:
            why = RedactFilter(notify_secrets(url)).redact(" ".join(said))
            failed.append(f"{shown_notify_url(url)} ({why or 'apprise gave no reason'})")
    return failed


@contextlib.contextmanager
def _apprise_warnings() -> Iterator[list[str]]:
    """apprise's warnings meanwhile (kept out of the log otherwise: they may hold URLs),
    for the user who asked for a test to read why it failed."""
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("apprise")
    handler, level, propagate = Collect(logging.WARNING), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# The logger every marketspine module logs under.
_ROOT = "marketspine"


def attach_notify(urls: Sequence[str], **options: Any) -> NotifyHandler:
    """A NotifyHandler on the ``marketspine`` logger; the logger passes INFO on while it is
    attached (events such as "circuit closed" are INFO). Undo with ``detach_notify``."""
    handler = NotifyHandler(urls, **options)
    logger = logging.getLogger(_ROOT)
    handler.restore_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def detach_notify(handler: NotifyHandler) -> None:
    """Remove ``handler`` from the ``marketspine`` logger, send what it folded, stop it."""
    logger = logging.getLogger(_ROOT)
    logger.removeHandler(handler)
    if not any(isinstance(h, NotifyHandler) for h in logger.handlers):
        logger.setLevel(handler.restore_level or logging.NOTSET)
    handler.stop()
