"""What a generation emits, whoever runs it (the local engine or an upstream API).

Torch-free on purpose: the API layer, the upstream chain and the settings import these
types without loading the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """One generated token: its text, log-probability and the most likely alternatives.

    ``top`` holds (text, logprob) pairs, most likely first; empty unless asked for.
    Log-probabilities are of the model's own distribution (log-softmax of the logits,
    before temperature and top-p).
    """

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Delta:
    text: str
    # Tokens generated since the previous Delta, when the request asked for logprobs.
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Done:
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    error: Exception


Event = Delta | Done | Failed
