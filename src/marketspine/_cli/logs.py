"""The command line's logging and alerts, set up in one place: ``--log-level``,
``--log-format text|json``, ``--notify URL`` (and ``MARKETSPINE_NOTIFY``), with secrets kept
out of every line."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator

from .._spine.notify import (
    JsonFormatter,
    RedactFilter,
    attach_notify,
    detach_notify,
    notify_secrets,
    split_notify_urls,
)

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "TEXT_FORMAT", "operations", "url_password"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "marketspine: %(levelname)s: %(message)s"


def url_password(url: str | None) -> str | None:
    """The password in ``scheme://user:password@host`` (a database or Redis URL), if any."""
    found = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^@]+)@", url or "")
    return found.group(1) if found else None


@contextlib.contextmanager
def operations(
    *,
    log_level: str = "warning",
    log_format: str = "text",
    notify: Iterable[str] = (),
    secrets: Iterable[str | None] = (),
) -> Iterator[RedactFilter]:
    """Log at ``log_level`` to stderr in ``log_format`` and send alerts to ``notify``, with
    ``secrets`` (and notify URLs, URL passwords) replaced by ``***`` everywhere; the
    notifier stops (sending what it folded) on leaving. Raises InvalidRequestError for a
    notify URL apprise cannot parse. Yields the filter (more secrets may be added later)."""
    urls = split_notify_urls(notify)
    redact = RedactFilter([*secrets, *(s for url in urls for s in notify_secrets(url))])
    root = logging.getLogger()
    if not root.handlers:  # main() sets one up; a test calling the command directly may not
        logging.basicConfig(format=TEXT_FORMAT)
    level = logging.getLevelName(log_level.upper())
    root.setLevel(level)
    # httpx logs every request at INFO: that is --log-level debug's business.
    httpx_log = logging.getLogger("httpx")
    httpx_level = httpx_log.level
    httpx_log.setLevel(level if level <= logging.DEBUG else logging.WARNING)
    for handler in root.handlers:
        # On the handler too: the notifier lets INFO through the marketspine logger.
        handler.setLevel(level)
        handler.addFilter(redact)
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
    notifier = None
    try:
        if urls:
            notifier = attach_notify(urls)
            notifier.addFilter(redact)
            logging.getLogger("marketspine.notify").info("alerts go to %d notify URL(s)", len(urls))
        yield redact
    finally:
        if notifier is not None:
            detach_notify(notifier)
        httpx_log.setLevel(httpx_level)
        for handler in root.handlers:
            handler.removeFilter(redact)
