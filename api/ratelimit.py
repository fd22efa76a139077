"""Requests per API key: a token bucket of `burst` requests refilled at `requests_per_second`.

Every answer to an authenticated request carries `RateLimit-Limit` (the burst),
`RateLimit-Remaining` (requests left now) and `RateLimit-Reset` (seconds until the bucket is
full again); a request over the limit answers `429 rate_limited` with `Retry-After` (seconds
until the next request is allowed). Buckets live in memory, one per key, timed by the app clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aiohttp import web

from api.errors import ApiError

# Buckets idle this long are full again and are forgotten (bounded memory).
_FORGET_AFTER_CHECKS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # until one request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self, requests_per_second: float, burst: int) -> None:
        self.rate = requests_per_second
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._checks = 0

    def check(self, key_id: str, now: float) -> Decision:
        """Take one request from the key's bucket if it has one."""
        self._checks += 1
        if self._checks >= _FORGET_AFTER_CHECKS:
            self._forget_full(now)
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        elif now > bucket.updated:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        elif now < bucket.updated:
            # The wall clock was stepped back: count from the new time (no token from the step,
            # and no 429s until the clock is back where it was).
            bucket.updated = now
        allowed = bucket.tokens >= 1.0 - 1e-9
        if allowed:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
        missing = self.burst - bucket.tokens
        return Decision(
            allowed=allowed,
            limit=self.burst,
            remaining=int(bucket.tokens + 1e-9),
            reset_seconds=math.ceil(missing / self.rate - 1e-9),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / self.rate)),
        )

    def _forget_full(self, now: float) -> None:
        self._checks = 0
        full_after = self.burst / self.rate
        for key_id in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key_id]


LIMITER = web.AppKey("rate_limiter", RateLimiter)
_DECISION = web.RequestKey("rate_limit_decision", Decision)


def setup(app: web.Application, requests_per_second: float, burst: int) -> None:
    """Keep a limiter on the app and put its headers on every answer (errors included)."""
    app[LIMITER] = RateLimiter(requests_per_second, burst)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        decision = request.get(_DECISION)
        if decision is not None:
            response.headers.update(decision.headers())

    app.on_response_prepare.append(add_headers)


def check(request: web.Request, key_id: str, now: float) -> None:
    """Count the request against the key; raise 429 rate_limited when over the limit."""
    decision = request.app[LIMITER].check(key_id, now)
    request[_DECISION] = decision
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests for this API key: at most {decision.limit} at once and "
            f"{request.app[LIMITER].rate:g} per second; retry after {decision.retry_after} s",
        )
