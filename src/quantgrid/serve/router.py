"""Model names, and picking an adapter for ``auto`` requests without any training data.

Two scores, both in [0, 1]:

* ``arrow`` (Ostapenko et al., "Towards modular LLMs by building and reusing a library
  of LoRAs", 2024): each adapter's prototype for a layer is the top right singular vector
  of its delta-W = scaling·B·A, the input direction that layer's adapter changes most.
  A prompt scores ``mean |cos(x_t, v)|`` over its tokens' inputs x_t to that layer,
  averaged over the adapter's layers. The SVD is done in factor space (two thin QRs and
  an r×r SVD), never on the d_out×d_in matrix.
* ``keywords``: the share of an adapter's manifest keywords (or the content words of
  its dataset description) found in the prompt, saturating at three matches.

The best adapter wins if its score reaches the threshold; otherwise the request goes to
the release model (or upstream, when configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from quantgrid.errors import NotFound
from quantgrid.serve.slots import _WORD, read_adapter

RELEASE_MODEL = "quantgrid"
BASE_MODEL = "base"
AUTO_MODEL = "auto"
DEFAULT_THRESHOLDS = {"arrow": 0.2, "keywords": 0.34}


def top_right_singular_vector(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unit vector (d_in,) maximising ``|B·A·v|``, from a (r, d_in) and b (d_out, r).

    A^T = Qa·Ra and B = Qb·Rb (thin QR), so B·A = Qb·(Rb·Raᵀ)·Qaᵀ; the SVD of the r×r
    middle, U·S·Vᵀ, gives B·A's right singular vectors as Qa·V.
    """
    qa, ra = torch.linalg.qr(a.double().t())  # (d_in, r), (r, r)
    _, rb = torch.linalg.qr(b.double())  # (r, r)
    _, _, vh = torch.linalg.svd(rb @ ra.t())  # vh: (r, r), rows are right singular vectors
    return (qa @ vh[0]).float()


def arrow_prototypes(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {m: top_right_singular_vector(a, b) for m, (a, b) in factors.items()}


def arrow_score(inputs: dict[str, torch.Tensor], prototypes: dict[str, torch.Tensor]) -> float:
    """Mean over the adapter's modules of mean_t |cos(x_t, v)|; inputs[m] is (T, d_in)."""
    scores = []
    for m, v in prototypes.items():
        x = inputs.get(m)
        if x is None:
            continue
        cos = (x @ v) / x.norm(dim=-1).clamp(min=1e-8)  # (T,), v is unit
        scores.append(float(cos.abs().mean()))
    return sum(scores) / len(scores) if scores else 0.0


def keyword_score(prompt: str, keywords: list[str]) -> float:
    if not keywords:
        return 0.0
    words = set(_WORD.findall(prompt.lower()))
    hits = sum(1 for k in keywords if k in words or (" " in k and k in prompt.lower()))
    return min(1.0, hits / min(3, len(keywords)))


@dataclass
class Route:
    adapter: str | None  # None: nothing local fits
    score: float
    method: str
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class Target:
    """What a model name resolves to: a local adapter (None = base), or 'auto'."""

    model: str
    adapter: str | None
    auto: bool = False


class Router:
    """Resolves model names and routes ``auto`` requests. ``release`` is the adapter name of
    the current release (None when no release is deployed)."""

    def __init__(self, engine, method: str = "arrow", threshold: float | None = None):
        if method not in DEFAULT_THRESHOLDS:
            raise ValueError(f"unknown routing method {method!r}")
        self.engine = engine
        self.method = method
        self.threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
        self.release: str | None = None
        self._protos: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def model_names(self) -> list[str]:
        names = [RELEASE_MODEL, BASE_MODEL, AUTO_MODEL]
        names += [f"{RELEASE_MODEL}:{n}" for n in sorted(self.engine.adapters) if n != self.release]
        return names

    def resolve(self, model: str) -> Target:
        """Model name -> target; NotFound (404) for a name we do not serve."""
        name = model.strip()
        if name in (RELEASE_MODEL, f"{RELEASE_MODEL}:latest"):
            return Target(name, self.release)
        if name == BASE_MODEL:
            return Target(name, None)
        if name == AUTO_MODEL:
            return Target(name, None, auto=True)
        if name.startswith(f"{RELEASE_MODEL}:") and name.split(":", 1)[1] in self.engine.adapters:
            return Target(name, name.split(":", 1)[1])
        raise NotFound(f"The model '{model}' does not exist",
                       hint=f"use one of: {', '.join(self.model_names())}")

    def candidates(self) -> list[str]:
        return [n for n in self.engine.adapters if n != self.release]

    def route(self, prompt: str, prompt_ids: list[int]) -> Route:
        """Best adapter for a prompt, or adapter=None when none reaches the threshold."""
        names = self.candidates()
        if not names:
            return Route(None, 0.0, self.method)
        if self.method == "keywords":
            scores = {n: keyword_score(prompt, self.engine.adapters[n].keywords) for n in names}
        else:
            protos = {n: self._prototypes(n) for n in names}
            self.engine.ensure_wrapped(sorted({m for p in protos.values() for m in p}))
            inputs = self.engine.capture_inputs(prompt_ids)
            scores = {n: arrow_score(inputs, protos[n]) for n in names}
        best = max(scores, key=scores.get)
        chosen = best if scores[best] >= self.threshold else None
        return Route(chosen, scores[best], self.method, scores)

    def _prototypes(self, name: str) -> dict[str, torch.Tensor]:
        info = self.engine.adapters[name]
        key = (name, str(info.path))
        if key not in self._protos:
            self._protos[key] = arrow_prototypes(read_adapter(info.path).factors)
        return self._protos[key]
