"""A/B serving: requests for ``quantgrid`` split between arms by weight.

``--ab quantgrid=0.9,upstream:primary=0.1`` sends 90% of the ``quantgrid`` requests to the
local release and 10% to the upstream named ``primary``. An arm is any model name the
server serves (``quantgrid``, ``quantgrid:NAME``, ``base``, ``auto``) or ``upstream:NAME``.
A user stays on one arm: the arm is chosen from a hash of the user id (the
``X-QuantGrid-User`` header, else OpenAI's ``user`` field), so the same user gets the same
arm on every request and every server with the same split; a request without a user id
gets a random arm. ``/metrics`` counts requests, latency, tokens and ratings per arm.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from quantgrid.errors import ConfigError

USER_HEADER = "X-QuantGrid-User"
ARM_HEADER = "X-QuantGrid-Arm"
SPLIT_MODELS = ("quantgrid", "quantgrid:latest")  # the names an A/B split applies to


@dataclass(frozen=True)
class Arm:
    name: str  # as written: "quantgrid", "upstream:primary"
    weight: float

    @property
    def upstream(self) -> str | None:
        return self.name.split(":", 1)[1] if self.name.startswith("upstream:") else None


class ABSplit:
    def __init__(self, arms: list[Arm]):
        total = sum(a.weight for a in arms)
        self.arms = [Arm(a.name, a.weight / total) for a in arms]

    @classmethod
    def parse(cls, spec: str, upstreams: list[str]) -> ABSplit:
        """``ARM=WEIGHT,ARM=WEIGHT...``; upstream arms must name a configured upstream."""
        arms = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            name, sep, w = part.rpartition("=")
            try:
                weight = float(w)
            except ValueError:
                weight = -1.0
            if not sep or not name or not weight > 0 or weight == float("inf"):
                raise ConfigError(f"--ab part {part!r} is not ARM=WEIGHT with a positive weight",
                                  hint="e.g. --ab quantgrid=0.9,upstream:primary=0.1")
            arm = Arm(name.strip(), weight)
            if arm.upstream is not None and arm.upstream not in upstreams:
                raise ConfigError(f"--ab arm {arm.name!r} names no configured upstream",
                                  hint=f"add --upstream {arm.upstream}=URL, or use one of: "
                                       f"{', '.join(upstreams) or '(none configured)'}")
            if any(a.name == arm.name for a in arms):
                raise ConfigError(f"--ab names arm {arm.name!r} twice", hint="give each arm once")
            arms.append(arm)
        if len(arms) < 2:
            raise ConfigError("--ab needs at least two arms", hint="e.g. --ab quantgrid=0.9,upstream:primary=0.1")
        return cls(arms)

    def pick(self, user: str | None) -> Arm:
        """The arm of ``user`` (sticky), or a random one when there is no user id."""
        if user:
            u = int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") / 2 ** 64
        else:
            u = random.random()
        acc = 0.0
        for arm in self.arms:
            acc += arm.weight
            if u < acc:
                return arm
        return self.arms[-1]

    def check_models(self, served: list[str]) -> None:
        for arm in self.arms:
            if arm.upstream is None and arm.name not in served:
                raise ConfigError(f"--ab arm {arm.name!r} is not a model this server serves",
                                  hint=f"use one of: {', '.join(served)}, or upstream:NAME")
