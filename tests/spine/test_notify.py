"""Alerts through apprise (a real ``json://`` URL to a loopback receiver): one message per
(event, key) per window with a count, a failing notifier logged and counted, secrets
redacted, JSON log lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from helpers import FakeTime
from receiver import Receiver, receiver

from marketspine._client.circuit import CircuitBreaker
from marketspine._spine.notify import (
    JsonFormatter,
    NotifyHandler,
    RedactFilter,
    attach_notify,
    detach_notify,
    notify_secrets,
    split_notify_urls,
)
from marketspine.errors import InvalidRequestError


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def got() -> Iterator[Receiver]:
    with receiver() as found:
        yield found


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def notifier(got: Receiver, clock: HandClock) -> Iterator[NotifyHandler]:
    handler = attach_notify([got.url], clock=clock)
    yield handler
    detach_notify(handler)


def test_a_flapping_circuit_is_one_message_per_state_change_per_minute_with_a_count(
    notifier: NotifyHandler, got: Receiver, clock: HandClock
) -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=0, name="upstream-a", clock=fake.clock)
    for _ in range(3):  # open, closed, three times within the minute
        breaker.record_failure()
        breaker.record_success()
    notifier.flush()
    first = got.wait_for(2)
    assert [m["title"] for m in first] == [
        "marketspine: circuit open",
        "marketspine: circuit closed",
    ]
    assert "circuit to upstream-a opened after 1 consecutive failures" in first[0]["message"]
    assert len(got.messages) == 2 and notifier.statistics.folded == 4

    clock.now += 59.0
    notifier.flush()
    assert len(got.messages) == 2  # the minute is not over

    clock.now += 1.0
    notifier.flush()
    later = got.wait_for(4)[2:]
    # The repeats, counted, the last state (closed) last.
    assert [m["title"] for m in later] == [
        "marketspine: circuit open",
        "marketspine: circuit closed",
    ]
    assert all("(3 times in 60 s)" in m["message"] for m in later)

    clock.now += 61.0  # a quiet minute later, the next change goes at once
    breaker.record_failure()
    notifier.flush()
    assert "(" not in got.wait_for(5)[4]["message"].splitlines()[0]


def test_records_without_an_event_are_not_sent(notifier: NotifyHandler, got: Receiver) -> None:
    logging.getLogger("marketspine.client").warning("just a log line")
    notifier.flush()
    assert got.messages == [] and notifier.statistics.sent == 0


def test_details_and_levels_reach_the_message(notifier: NotifyHandler, got: Receiver) -> None:
    logging.getLogger("marketspine.warmup").error(
        "warmup of upbit-sg failed: connection refused",
        extra={"event": "warmup_failed", "key": "upbit-sg", "url": "http://127.0.0.1:9"},
    )
    notifier.flush()
    (message,) = got.wait_for(1)
    assert message["type"] == "failure"
    assert message["message"].splitlines() == [
        "warmup of upbit-sg failed: connection refused",
        "url: http://127.0.0.1:9",
    ]


def test_a_failing_notifier_is_logged_and_counted_never_raised(
    notifier: NotifyHandler, got: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    got.status = 500
    with caplog.at_level(logging.WARNING, logger="marketspine.notify"):
        logging.getLogger("marketspine.client").warning(
            "circuit to x opened", extra={"event": "circuit_open", "key": "x"}
        )
        notifier.flush()
    assert notifier.statistics.failed == 1 and notifier.statistics.sent == 0
    failures = [r for r in caplog.records if r.name == "marketspine.notify"]
    assert failures and "not delivered" in failures[0].getMessage()
    # Its own failure lines are never forwarded (no loop): still one failed send.
    notifier.flush()
    assert notifier.statistics.failed == 1


def test_a_notifier_nobody_listens_on_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    handler = NotifyHandler(["json://127.0.0.1:1/"])
    record = logging.LogRecord("marketspine.client", logging.WARNING, "", 0, "ban", None, None)
    record.event, record.key = "ban", "x"
    with caplog.at_level(logging.WARNING, logger="marketspine.notify"):
        handler.handle(record)
        handler.flush()
    handler.stop()
    assert handler.statistics.failed == 1
    assert any("not delivered" in r.getMessage() for r in caplog.records)


def test_attach_lets_info_events_through_and_detach_puts_the_level_back(got: Receiver) -> None:
    logger = logging.getLogger("marketspine")
    before = logger.level
    handler = attach_notify([got.url])
    assert logger.getEffectiveLevel() <= logging.INFO
    detach_notify(handler)
    assert logger.level == before and handler not in logger.handlers


def test_a_url_apprise_cannot_parse_is_refused_by_its_scheme_only() -> None:
    with pytest.raises(InvalidRequestError, match=r"'nosuch://\*\*\*'") as caught:
        NotifyHandler(["nosuch://secret-token-123/"])
    assert "secret-token-123" not in str(caught.value)


def test_notify_urls_split_on_commas_and_spaces() -> None:
    assert split_notify_urls(["a://1, b://2", " c://3\n"]) == ["a://1", "b://2", "c://3"]


def test_redaction_covers_message_details_and_traceback() -> None:
    url = "tgram://123456789:AAHsecretToken/987654321"
    redact = RedactFilter(["admintoken42", *notify_secrets(url)])
    try:
        raise RuntimeError(f"cannot reach {url} with admintoken42")
    except RuntimeError:
        record = logging.LogRecord(
            "marketspine", logging.ERROR, "", 0, "db %s token %s", (
                "postgresql://user:pw-secret@127.0.0.1/test", "admintoken42"
            ), exc_info=__import__("sys").exc_info(),
        )  # fmt: skip
    record.detail = f"sent to {url}"
    assert redact.filter(record)
    text = JsonFormatter().format(record)
    for secret in ("admintoken42", "pw-secret", "AAHsecretToken", "123456789"):
        assert secret not in text
    line = json.loads(text)
    assert line["message"] == "db postgresql://user:***@127.0.0.1/test token ***"
    assert line["detail"] == "sent to ***" and "RuntimeError" in line["exc"]


def test_json_lines_carry_event_key_and_details() -> None:
    record = logging.LogRecord("marketspine.client", logging.WARNING, "", 0, "banned", None, None)
    record.event, record.key, record.seconds = "ban", "http://x", 30
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "marketspine.client"
    assert (line["event"], line["key"], line["seconds"], line["message"]) == (
        "ban", "http://x", 30, "banned",
    )  # fmt: skip
    assert line["time"].endswith("+00:00")


def test_the_handler_keeps_sending_after_someone_configures_logging(
    notifier: NotifyHandler, got: Receiver
) -> None:
    import logging.config

    # As uvicorn does when a server starts: dictConfig closes every existing handler.
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    logging.getLogger("marketspine.client").warning(
        "circuit to y opened", extra={"event": "circuit_open", "key": "y"}
    )
    notifier.flush()
    assert got.wait_for(1)[0]["title"] == "marketspine: circuit open"
