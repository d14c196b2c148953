"""Model names, and picking an adapter for ``auto`` requests.

Three scores, each in [0, 1]:

* ``profile`` (the default): ``quantgrid train`` records in each adapter's manifest the
  share of its training questions that contain each common word
  (``quantgrid.data.profile``). A question's score for adapter k is the mean, over the
  question's content words w, of ``df_k(w) / (sum_m df_m(w) + prior)``: how much of the
  evidence for that word belongs to k, with ``prior`` standing for the world outside the
  adapters (a word no adapter knows adds 0 everywhere). So distinctive topic words
  decide, words every adapter shares count little, and an off-topic question scores low
  everywhere and goes to the fallback. An adapter without a recorded profile uses its
  description keywords, each as if every question held it.
* ``arrow`` (Ostapenko et al., "Towards modular LLMs by building and reusing a library
  of LoRAs", 2024): each adapter's prototype for a layer is the top right singular vector
  of its delta-W = scaling·B·A, the input direction that layer's adapter changes most.
  A prompt scores ``mean |cos(x_t, v)|`` over its tokens' inputs x_t to that layer,
  averaged over the adapter's layers. The SVD is done in factor space (two thin QRs and
  an r×r SVD), never on the d_out×d_in matrix. On a small base these directions say
  little about topics (``docs/serving-guide.md`` has the measurements).
* ``keywords``: the share of an adapter's manifest keywords (or the content words of
  its dataset description) found in the prompt, saturating at three matches.

The best adapter wins if its score reaches the threshold; otherwise the request goes to
the release model (or upstream, when configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from quantgrid.data.profile import question_words
from quantgrid.errors import NotFound
from quantgrid.serve.slots import _WORD, read_adapter

RELEASE_MODEL = "quantgrid"
BASE_MODEL = "base"
AUTO_MODEL = "auto"
DEFAULT_THRESHOLDS = {"profile": 0.35, "arrow": 0.2, "keywords": 0.34}
PROFILE_PRIOR = 0.05  # the df mass of "everything else" behind each word


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


def profile_scores(prompt: str, profiles: dict[str, dict[str, float]], prior: float = PROFILE_PRIOR
                   ) -> dict[str, float]:
    """Score of every adapter for ``prompt`` from the adapters' word profiles (see module doc)."""
    words = question_words(prompt)
    scores = dict.fromkeys(profiles, 0.0)
    if not words:
        return scores
    for w in words:
        total = sum(p.get(w, 0.0) for p in profiles.values())
        if total == 0.0:
            continue
        for name, p in profiles.items():
            if w in p:
                scores[name] += p[w] / (total + prior)
    return {n: s / len(words) for n, s in scores.items()}


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

    def __init__(self, engine, method: str = "profile", threshold: float | None = None):
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

    def route(self, prompt: str, prompt_ids: list[int] | None = None) -> Route:
        """Best adapter for a prompt (the user's question text), or adapter=None when none
        reaches the threshold. ``prompt_ids`` are only used by ``arrow`` (default: the text's)."""
        names = self.candidates()
        if not names:
            return Route(None, 0.0, self.method)
        if self.method == "profile":
            scores = profile_scores(prompt, {n: self._profile(n) for n in names})
        elif self.method == "keywords":
            scores = {n: keyword_score(prompt, self.engine.adapters[n].keywords) for n in names}
        else:
            protos = {n: self._prototypes(n) for n in names}
            self.engine.ensure_wrapped(sorted({m for p in protos.values() for m in p}))
            inputs = self.engine.capture_inputs(prompt_ids if prompt_ids is not None else self.engine.encode(prompt))
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

    def _profile(self, name: str) -> dict[str, float]:
        info = self.engine.adapters[name]
        return info.profile if info.profile else dict.fromkeys(info.keywords, 1.0)
