"""Choosing the next token and cutting text at stop strings: pure functions, tested by table.

``SamplingParams.validated`` is the one gate between a request and a batch: whatever the
API layer accepted, what reaches the engine is finite and bounded (a temperature below
``TEMPERATURE_FLOOR`` is greedy, a seed is reduced to the generator's 64-bit range,
stop lists and strings are capped), so one request's settings can never make the
sampler fail for the rows decoded with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from quantgrid.errors import ConfigError

# Below this, logits / temperature overflow float32 (1e-300 gives inf, then NaN): greedy,
# which is what such a temperature means anyway (vLLM uses the same idea with 1e-5).
TEMPERATURE_FLOOR = 1e-5
MAX_TEMPERATURE = 100.0  # beyond this the distribution is uniform to float precision
SEED_RANGE = 2 ** 64  # torch.Generator.manual_seed takes [0, 2**64)
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_LOGPROBS = 20  # OpenAI's top_logprobs limit


class SamplingError(ConfigError):
    """A sampling setting out of range (HTTP 400); ``param`` names the request field."""

    code = "invalid_sampling_parameter"

    def __init__(self, param: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.param = param


@dataclass
class SamplingParams:
    """Per-request decoding settings; the same fields the OpenAI and Ollama APIs take."""

    max_tokens: int = 128
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # benchmarks: always generate max_tokens
    logprobs: int | None = None  # None: no logprobs; k: each token's logprob and its k most likely alternatives

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def validated(self) -> SamplingParams:
        """A copy that is safe to decode with, or SamplingError naming what is wrong."""
        t = _number("temperature", self.temperature)
        if t < 0:
            raise SamplingError("temperature", f"temperature must be >= 0, got {t}", hint="use 0 for greedy decoding")
        top_p = _number("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise SamplingError("top_p", f"top_p must be in (0, 1], got {top_p}", hint="use 1 to keep every token")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise SamplingError("max_tokens", f"max_tokens must be a whole number >= 1, got {self.max_tokens!r}")
        seed = self.seed
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise SamplingError("seed", f"seed must be an integer, got {seed!r}")
            seed %= SEED_RANGE  # any integer is a valid seed; the generator takes 64 bits
        stop = self.stop or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, (list, tuple)) or not all(isinstance(x, str) for x in stop):
            raise SamplingError("stop", "stop must be a string or a list of strings")
        stop = list(dict.fromkeys(x for x in stop if x))
        if len(stop) > MAX_STOP_SEQUENCES:
            raise SamplingError("stop", f"stop has {len(stop)} sequences; at most {MAX_STOP_SEQUENCES} are allowed",
                                hint="keep the few stop strings that end an answer")
        longest = max((len(x) for x in stop), default=0)
        if longest > MAX_STOP_CHARS:
            raise SamplingError("stop", f"a stop sequence is {longest} characters; at most {MAX_STOP_CHARS} are allowed",
                                hint="stop on a short marker instead")
        lp = self.logprobs
        if lp is not None and (isinstance(lp, bool) or not isinstance(lp, int) or not 0 <= lp <= MAX_LOGPROBS):
            raise SamplingError("top_logprobs", f"top_logprobs must be between 0 and {MAX_LOGPROBS}, got {lp!r}")
        temperature = 0.0 if t < TEMPERATURE_FLOOR else min(t, MAX_TEMPERATURE)
        return replace(self, temperature=temperature, top_p=top_p, seed=seed, stop=stop)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SamplingError(name, f"{name} must be a finite number, got {value!r}")
    return float(value)


def make_generator(seed: int | None) -> torch.Generator:
    """A per-request generator, so a seeded request gives the same text whatever else is in the batch."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed % SEED_RANGE)
    return g


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability adds up to ``top_p``; renormalise.

    probs: (V,) summing to 1. The most likely token always stays.
    """
    if top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, descending=True)
    cum = torch.cumsum(sorted_p, 0)
    # Drop a token when the mass *before* it already reaches top_p.
    drop = (cum - sorted_p) >= top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return out / out.sum()


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Next token id from one row of logits (V,); ``params`` as ``SamplingParams.validated`` leaves them."""
    if params.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    probs = top_p_filter(probs, params.top_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def find_stop(text: str, stops: list[str], start: int = 0) -> int | None:
    """Index where the earliest stop string starts in ``text`` (searching from ``start``), or None."""
    hits = [i for s in stops if s and (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


def safe_prefix_len(text: str, stops: list[str]) -> int:
    """How much of ``text`` can be sent now: hold back a tail that could be the start of a stop
    string, and a trailing U+FFFD (half of a multi-byte character still being decoded)."""
    n = len(text)
    while n > 0 and text[n - 1] == "\ufffd":
        n -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, n), 0, -1):
            if text[:n].endswith(s[:k]):
                hold = max(hold, k)
                break
    return n - hold
