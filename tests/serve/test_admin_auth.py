"""Admin sessions, CSRF tokens and the login slow-down, on a hand-driven clock."""

from __future__ import annotations

from marketspine._serve.admin_auth import AdminSessions, LoginThrottle, tokens_match


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_match_only_the_same_token() -> None:
    assert tokens_match("s3cret", "s3cret")
    assert not tokens_match("s3cre", "s3cret")
    assert not tokens_match("s3cret ", "s3cret")
    assert not tokens_match("", "s3cret")


def test_a_session_expires_and_can_be_closed() -> None:
    clock = Clock()
    sessions = AdminSessions(session_s=60, clock=clock)
    first = sessions.open()
    assert sessions.get(first.id) == first
    assert sessions.get("forged") is None and sessions.get(None) is None
    clock.now += 59.9
    assert sessions.get(first.id) == first
    clock.now += 0.1
    assert sessions.get(first.id) is None, "expired after session_s"
    second = sessions.open()
    sessions.close(second.id)
    assert sessions.get(second.id) is None


def test_csrf_token_belongs_to_its_session() -> None:
    sessions = AdminSessions()
    one, two = sessions.open(), sessions.open()
    assert one.csrf != two.csrf and one.id != two.id
    assert sessions.csrf_ok(one, one.csrf)
    assert not sessions.csrf_ok(one, two.csrf)
    assert not sessions.csrf_ok(one, None)
    assert not sessions.csrf_ok(one, "")


def test_repeated_failures_from_one_client_slow_down_and_success_clears_them() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_failures=3, first_lockout_s=1, max_lockout_s=8, clock=clock)
    assert [throttle.failed("a") for _ in range(3)] == [0, 0, 0]
    assert throttle.wait_s("a") == 0
    lockouts = []
    for _ in range(5):
        lockouts.append(throttle.failed("a"))
        assert throttle.wait_s("a") == lockouts[-1]
        clock.now += lockouts[-1]
        assert throttle.wait_s("a") == 0
    assert lockouts == [1, 2, 4, 8, 8], "doubling, capped"
    assert throttle.wait_s("b") == 0, "another client is not slowed"
    throttle.succeeded("a")
    assert throttle.failed("a") == 0, "a success starts the count again"
