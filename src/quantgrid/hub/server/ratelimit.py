"""Per-client token buckets: ``burst`` requests at once, refilled at ``per_minute``/60 per second.

In-process state, kept on ``app.state``: with several hub processes behind a load balancer
each enforces its own share (put the limit in the proxy, e.g. nginx ``limit_req``, for a
global one).
"""

from __future__ import annotations

import math
import threading
import time

from quantgrid.errors import RateLimited


class RateLimiter:
    def __init__(self, per_minute: int, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._lock = threading.Lock()

    def hit(self, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket or raise RateLimited with a Retry-After."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((cost - tokens) / self.rate)
                raise RateLimited(f"too many requests; try again in {wait} s",
                                  hint="slow down, or ask the hub admin to raise rate_limit_per_minute",
                                  retry_after=wait)
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > 100_000:  # forget idle clients rather than grow forever
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}
