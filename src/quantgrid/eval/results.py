"""``results.json``: the typed, versioned record of one ``quantgrid eval`` run.

``quantgrid eval`` writes an :class:`EvalResults`; everything else (the report, the
checklist, the hub's diagnoses, the manifest's eval summary, the demo) reads one, so a
field has one name and one meaning everywhere. The file keeps LocoLLM's field names
(``adapter``, ``base_model``, ``quantization``, ``benchmark``, ``n_examples``, ``metric``,
``adapter_score``, ``base_model_score``, ``improvement``, ``timestamp``) first, and adds
``higher_is_better`` so the direction of the primary metric is in the file:
``improvement`` is positive when the adapter is better, whatever the metric.

``EvalResults.public()`` is the aggregate-only copy that a submission may carry: numbers
and counts, never benchmark text, generated answers, per-example values or local paths.

Pydantic only (no torch): the hub and the thin client read results too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from quantgrid.errors import DataError

RESULTS_VERSION = 1
LOSS = "loss"
# A benchmark named like this is the hub's or quantgrid's own set: its name is not private.
PUBLIC_PREFIXES = ("builtin:", "hub:")


class _Record(BaseModel):
    # Readers keep fields a newer writer added (a metric's breakdown, say) instead of failing.
    model_config = ConfigDict(extra="allow")


class LossStats(_Record):
    """One model's proof of loss on one set."""

    mean_nats_per_token: float | None = None
    perplexity: float | None = None
    n_examples: int = 0
    n_tokens: int = 0
    n_skipped: int = 0


class LossBlock(_Record):
    """Base vs adapter on the benchmark, in nats per completion token (lower is better)."""

    unit: str = "nats per completion token"
    base: LossStats
    adapter: LossStats | None = None
    delta: float | None = Field(None, description="adapter minus base; negative: the adapter is better")
    delta_ci: list[float] | None = Field(None, description="bootstrap CI of delta, [low, high]")
    ci_level: float | None = None
    relative_change: float | None = None
    padding_fraction: float | None = None


class OodBlock(_Record):
    """The forgetting check: the loss on a general-domain set, base vs adapter."""

    benchmark: str
    n_examples: int = 0
    base: LossStats
    adapter: LossStats
    delta: float | None = None
    relative_change: float | None = None
    threshold: float
    passed: bool | None = None


class MetricScore(_Record):
    score: float | None = None
    n_scored: int = 0
    note: str | None = None
    higher_is_better: bool = True


class MetricBlock(_Record):
    base: MetricScore
    adapter: MetricScore | None = None
    improvement: float | None = Field(None, description="relative gain over the base; positive: the adapter is better")


class Verdict(_Record):
    """The minimum bar: better than the base in domain, no more than the allowed rise out of domain."""

    passed: bool
    in_domain_better: bool
    in_domain_significant: bool
    ood_passed: bool | None = None
    ood_threshold: float | None = None
    reasons: list[str] = Field(default_factory=list)


class Overlap(_Record):
    """What the benchmark shares with the adapter's training data (counts only)."""

    same_fingerprint: bool = Field(False, description="the benchmark IS the training set (same dataset hash)")
    n_overlapping: int | None = Field(None, description="benchmark items found in the training data; "
                                                        "None: no per-item check was possible")
    checked_per_item: bool = False

    @property
    def leaks(self) -> bool:
        return self.same_fingerprint or bool(self.n_overlapping)


class RunRecord(_Record):
    """How the numbers were measured."""

    prompt_template: str | None = None
    max_length: int | None = None
    max_new_tokens: int | None = None
    decoding: str = "greedy"
    bootstrap: int | None = None
    seed: int | None = None
    metrics_requested: list[str] = Field(default_factory=list)


class TrainingSummary(_Record):
    """What the adapter's own records say about its training (for the diagnoses)."""

    n_examples: int | None = None
    non_standard: list[str] = Field(default_factory=list)
    final_train_loss: float | None = None
    final_eval_loss: float | None = None


class EvalResults(_Record):
    """The contents of results.json (see the module docstring)."""

    # LocoLLM's fields, first and in its order
    adapter: str | None = None
    base_model: str
    quantization: str | None = None
    benchmark: str
    n_examples: int
    metric: str = LOSS
    adapter_score: float | None = None
    base_model_score: float | None = None
    improvement: float | None = Field(None, description="positive when the adapter is better, whatever the metric")
    timestamp: str | None = None
    # quantgrid's additions
    higher_is_better: bool = Field(False, description="True when a higher score of `metric` is better")
    results_version: int = RESULTS_VERSION
    quantgrid_version: str | None = None
    base_fingerprint: str | None = None
    benchmark_fingerprint: str | None = None
    recipe_hash: str | None = None
    settings: RunRecord = Field(default_factory=RunRecord)
    loss: LossBlock
    metrics: dict[str, MetricBlock] = Field(default_factory=dict)
    ood: OodBlock | None = None
    verdict: Verdict | None = None
    overlap: Overlap = Field(default_factory=Overlap)
    warnings: list[str] = Field(default_factory=list)
    diagnoses: list[str] = Field(default_factory=list)

    # ------------------------------------------------------------ reading and writing

    @classmethod
    def read(cls, path: str | Path) -> EvalResults:
        """Parse a results.json, or a DataError naming the file and what is wrong with it."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{p} not found", hint="write it with `quantgrid eval --output`") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{p} is not valid JSON ({str(e)[:100]})", hint="re-run `quantgrid eval`") from None
        return cls.parse_obj_or_error(data, str(p))

    @classmethod
    def parse_obj_or_error(cls, data: Any, where: str = "results.json") -> EvalResults:
        if not isinstance(data, dict):
            raise DataError(f"{where} must hold a JSON object", hint="re-run `quantgrid eval`")
        version = data.get("results_version", RESULTS_VERSION)
        if isinstance(version, int) and version > RESULTS_VERSION:
            raise DataError(f"{where} has results_version {version}; this quantgrid reads up to {RESULTS_VERSION}",
                            hint="upgrade quantgrid: `pip install -U quantgrid`")
        try:
            return cls.model_validate(data)
        except PydanticError as e:
            err = e.errors()[0]
            at = ".".join(str(x) for x in err["loc"]) or "(top level)"
            raise DataError(f"{where} is not a quantgrid results file: {at}: {err['msg']}",
                            hint="re-run `quantgrid eval` to write it again") from None

    def to_json(self) -> str:
        """Strict JSON (nan/inf become null) that every parser reads."""
        return json.dumps(_finite_only(self.model_dump(mode="json")), indent=2, allow_nan=False) + "\n"

    # ------------------------------------------------------------ the numbers readers want

    @property
    def adapter_loss(self) -> float | None:
        return self.loss.adapter.mean_nats_per_token if self.loss.adapter else None

    @property
    def base_loss(self) -> float | None:
        return self.loss.base.mean_nats_per_token

    @property
    def adapter_better(self) -> bool | None:
        """Is the adapter better than the base on the primary metric? None without both scores."""
        if self.improvement is None:
            return None
        return self.improvement > 0

    def public(self) -> EvalResults:
        """The aggregate-only copy a submission may carry.

        Kept: the scores, counts, fingerprints, the verdict's booleans and the settings.
        Dropped: every free-text field (warnings and diagnoses can quote benchmark items or
        local paths), a local benchmark's file name (its sha256 fingerprint stays), the
        adapter's directory name, metric notes and any field this version does not know.
        """
        def bench_name(name: str) -> str:
            return name if name.startswith(PUBLIC_PREFIXES) else "local benchmark"

        def stats(s: LossStats | None) -> LossStats | None:
            return None if s is None else LossStats(**s.model_dump(include=set(LossStats.model_fields)))

        def score(s: MetricScore | None) -> MetricScore | None:
            if s is None:
                return None
            return MetricScore(score=s.score, n_scored=s.n_scored, higher_is_better=s.higher_is_better)

        loss = LossBlock(**{k: getattr(self.loss, k) for k in LossBlock.model_fields if k not in ("base", "adapter")},
                         base=stats(self.loss.base), adapter=stats(self.loss.adapter))
        ood = None
        if self.ood is not None:
            ood = OodBlock(**{k: getattr(self.ood, k) for k in OodBlock.model_fields
                              if k not in ("base", "adapter", "benchmark")},
                           benchmark=bench_name(self.ood.benchmark), base=stats(self.ood.base),
                           adapter=stats(self.ood.adapter))
        verdict = None
        if self.verdict is not None:
            verdict = Verdict(**self.verdict.model_dump(include=set(Verdict.model_fields) - {"reasons"}))
        fields = {k: getattr(self, k) for k in EvalResults.model_fields}
        fields.update(
            adapter=None, benchmark=bench_name(self.benchmark),
            settings=RunRecord(**self.settings.model_dump(include=set(RunRecord.model_fields))),
            loss=loss, ood=ood, verdict=verdict,
            metrics={n: MetricBlock(base=score(m.base), adapter=score(m.adapter), improvement=m.improvement)
                     for n, m in self.metrics.items()},
            overlap=Overlap(**self.overlap.model_dump(include=set(Overlap.model_fields))),
            warnings=[], diagnoses=[])
        return EvalResults(**fields)


class EvalSummary(_Record):
    """The manifest's short version of results.json (``quantgrid.json`` ``eval``)."""

    benchmark: str | None = None
    benchmark_fingerprint: str | None = None
    n_examples: int | None = None
    timestamp: str | None = None
    metric: str | None = None
    higher_is_better: bool | None = None
    improvement: float | None = None
    loss_base: float | None = None
    loss_adapter: float | None = None
    loss_delta: float | None = None
    loss_delta_ci: list[float] | None = None
    ood_relative_change: float | None = None
    metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    passed: bool | None = None
    overlap: Overlap | None = None

    @classmethod
    def of(cls, r: EvalResults) -> EvalSummary:
        pub = r.public()
        return cls(
            benchmark=pub.benchmark, benchmark_fingerprint=r.benchmark_fingerprint, n_examples=r.n_examples,
            timestamp=r.timestamp, metric=r.metric, higher_is_better=r.higher_is_better, improvement=r.improvement,
            loss_base=r.base_loss, loss_adapter=r.adapter_loss, loss_delta=r.loss.delta,
            loss_delta_ci=r.loss.delta_ci,
            ood_relative_change=r.ood.relative_change if r.ood else None,
            metrics={k: {"base": v.base.score, "adapter": v.adapter.score if v.adapter else None}
                     for k, v in r.metrics.items()},
            passed=r.verdict.passed if r.verdict else None, overlap=pub.overlap)

    @classmethod
    def from_manifest(cls, value: dict[str, Any] | None) -> EvalSummary | None:
        """The summary in a manifest's ``eval`` field; None when absent or unreadable."""
        if not isinstance(value, dict):
            return None
        try:
            return cls.model_validate(value)
        except PydanticError:
            return None


def _finite_only(o: Any) -> Any:
    """nan/inf -> None: results.json stays strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite_only(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_only(v) for v in o]
    return o


__all__ = ["RESULTS_VERSION", "EvalResults", "EvalSummary", "LossBlock", "LossStats", "MetricBlock", "MetricScore",
           "OodBlock", "Overlap", "RunRecord", "TrainingSummary", "Verdict"]
