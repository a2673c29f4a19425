"""How failed requests are retried: the policy, and the tally of one request's attempts."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BannedError, InvalidRequestError, RateLimitedError, UpstreamError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "Tally"]


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried. ``attempts`` counts every try of one request, the
    first included. 5xx answers, timeouts and connection errors wait a capped exponential
    backoff with full jitter: a random delay in ``[0, min(max_delay, base_delay * 2**n)]``.
    A 429 pauses the whole group for ``rate_limited_delay`` seconds (doubling while 429s
    repeat, at most ``max_delay``). A 418 block is waited out when it lasts at most
    ``max_ban_wait`` seconds (``default_ban`` when upstream does not say how long), and is
    raised as BannedError otherwise."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    rate_limited_delay: float = 1.0
    default_ban: float = 10.0
    max_ban_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidRequestError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if min(self.base_delay, self.max_delay, self.rate_limited_delay, self.default_ban) < 0:
            raise InvalidRequestError("RetryPolicy delays must be >= 0 s")

    def backoff(self, failures: int, unit_random: float) -> float:
        """The delay before retrying after ``failures`` consecutive failures (1 = first)."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))
        return unit_random * ceiling


DEFAULT_RETRY = RetryPolicy()


@dataclass
class Tally:
    """What the attempts of one ``GET path`` have met so far under ``policy``, and the
    error each failure becomes (counted as it is made)."""

    policy: RetryPolicy
    path: str
    failures: int = 0  # 5xx, timeouts and connection errors
    rate_limited: int = 0
    bans: int = 0

    def server_error(self, failure: str, attempt: int) -> UpstreamError:
        """A 5xx answer (``failure`` says which) on attempt ``attempt``."""
        self.failures += 1
        return UpstreamError(
            f"{failure} (attempt {attempt} of {self.policy.attempts})", retry_after=None
        )

    def rate_limited_error(self, group: str, attempt: int) -> RateLimitedError:
        """A 429 for ``group``: the pause doubles while 429s repeat, up to ``max_delay``."""
        self.rate_limited += 1
        policy = self.policy
        pause = min(policy.max_delay, policy.rate_limited_delay * 2 ** (self.rate_limited - 1))
        return RateLimitedError(
            f"GET {self.path}: upstream answered 429 Too Many Requests for group {group!r} "
            f"(attempt {attempt} of {policy.attempts}); retry after {pause:g} s",
            retry_after=pause,
        )

    def banned_error(self, told: float | None) -> BannedError:
        """A 418 blocking for ``told`` seconds (None: not said; backing off doubles)."""
        self.bans += 1
        block = told if told is not None else self.policy.default_ban * 2 ** (self.bans - 1)
        return BannedError(
            f"GET {self.path}: upstream answered 418, this IP is blocked for {block:.0f} s "
            "after too many 429s",
            retry_after=block,
        )
