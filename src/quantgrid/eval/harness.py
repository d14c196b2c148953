"""Evaluate an adapter against its base, in domain and out of domain -> results.json.

``run_eval(EvalConfig(...))`` is what ``quantgrid eval`` calls:

1. read the benchmark (a file or ``builtin:NAME``) and the out-of-domain set;
2. check the adapter against the base (an adapter for another base is an error naming
   both) and the benchmark against the adapter's training data (overlap is a warning);
3. load the base ONCE with the adapter attached, and score proof of loss for the base
   (adapter disabled) and the adapter, on both sets, with a bootstrap CI of the delta;
4. generate answers greedily for both and compute the generation metrics;
5. judge the minimum bar (LocoLLM's): the adapter beats the base in its domain and its
   out-of-domain loss rises by no more than ``ood_threshold``;
6. write results.json (an :class:`~quantgrid.eval.results.EvalResults`: LocoLLM's fields
   plus ``higher_is_better``, ``loss``, ``metrics``, ``ood``, ``verdict``) to ``output`` and
   its report beside it (``results.json`` -> ``REPORT.md``, ``base_results.json`` ->
   ``base_REPORT.md``), and with ``write_into_adapter`` the adapter's ``eval/`` folder and
   manifest.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from quantgrid import __version__, lora_files
from quantgrid.data.types import Example
from quantgrid.errors import ConfigError, DataError, EvalError
from quantgrid.eval.loss import DEFAULT_BATCH_TOKENS, LossResult, bootstrap_delta_ci
from quantgrid.eval.metrics import MetricResult, compute_metrics, get_metric, metric_names
from quantgrid.eval.results import (
    EvalResults,
    EvalSummary,
    LossBlock,
    LossStats,
    MetricBlock,
    MetricScore,
    OodBlock,
    Overlap,
    RunRecord,
    TrainingSummary,
    Verdict,
)
from quantgrid.recipe import Recipe
from quantgrid.utils import atomic_write_text

DEFAULT_OOD = "builtin:general-ood"
LOSS = "loss"  # the primary metric by default: proof of loss, what the hub judges

# ProgressFactory(description, total) -> advance(n); the CLI plugs a Rich progress bar in.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _none_word(v: Any) -> Any:
    """'none' (or nothing) from a flag or a YAML file means no value."""
    return None if isinstance(v, str) and v.strip().lower() in ("", "none") else v


class EvalConfig(BaseModel):
    """The settings of one evaluation: the CLI flags, a YAML file and the API body."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str = Field(..., description="benchmark: JSON/JSONL file or builtin:NAME (e.g. builtin:finance-dev)",
                           json_schema_extra={"short": "-b"})
    adapter: Path | None = Field(None, description="adapter directory; without it the base is evaluated alone",
                                 json_schema_extra={"short": "-a"})
    output: Path | None = Field(None, description="results.json to write (its report is written beside it); "
                                "none writes no file", json_schema_extra={"short": "-o", "cli_default": "results.json"})
    metrics: list[str] = Field(default_factory=list, description="metric to compute (repeatable; default: all); "
                               "`--metric loss` alone skips generation; see `quantgrid eval --list-metrics`",
                               json_schema_extra={"flag": "--metric", "short": "-m"})
    primary_metric: str = Field(LOSS, description="metric reported in LocoLLM's adapter_score / base_model_score "
                                "/ improvement fields")
    ood: Annotated[str | None, BeforeValidator(_none_word)] = Field(
        DEFAULT_OOD, description="out-of-domain set for the forgetting check ('none' skips it)")
    base_model: str | None = Field(None, description="base model id or directory (default: the one the adapter "
                                   "was trained from)")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="longest generated answer, in tokens")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N benchmark items")
    write_into_adapter: bool = Field(False, description="also write eval/{benchmark.jsonl,results.json,REPORT.md} "
                                     "into the adapter and update its manifest")
    ood_threshold: float = Field(0.05, ge=0, description="largest allowed relative rise of the out-of-domain loss "
                                 "(0.05 = 5%)")
    max_length: int | None = Field(None, ge=16, description="longest scored sequence (default: the recipe's "
                                   "max_seq_length)")
    batch_tokens: int = Field(DEFAULT_BATCH_TOKENS, ge=16, description="padded tokens per loss batch (lower it if "
                              "memory runs out)")
    batch_size: int = Field(16, ge=1, description="prompts per generation batch")
    patterns: str | None = Field(None, description='pattern-compliance regexes: a preset (qi) or a JSON file with '
                                 '{"must": [...], "must_not": [...]}')
    train_data: str | None = Field(None, description="your training data, to check the benchmark does not overlap "
                                   "it (stays on this machine)")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples of the loss confidence interval")
    seed: int = Field(0, description="seed of the bootstrap confidence interval")
    device: str | None = Field(None, description="cpu, cuda, cuda:1... (default: cuda when available)")
    load_in_4bit: bool | None = Field(None, description="load the base in 4-bit NF4 (default: on for CUDA with "
                                      "bitsandbytes)", json_schema_extra={"flag": "--4bit/--no-4bit"})
    gguf: Path | None = Field(None, description="score this base GGUF through llama.cpp instead of the PyTorch "
                              "weights (results.json then names its quantization, e.g. Q4_K_M); the tokenizer "
                              "comes from the base model")
    gguf_adapter: Path | None = Field(None, description="with --gguf: the adapter as a GGUF LoRA (from `quantgrid "
                                      "export gguf --adapter`); --adapter still names its directory")

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        for name in v:
            if name != LOSS:
                get_metric(name)
        return list(dict.fromkeys(v))

    @field_validator("primary_metric")
    @classmethod
    def _primary(cls, v: str) -> str:
        if v != LOSS:
            get_metric(v)
        return v

    @model_validator(mode="after")
    def _adapter_needed(self) -> EvalConfig:
        if self.write_into_adapter and self.adapter is None:
            raise ConfigError("--write-into-adapter needs --adapter", hint="name the adapter directory to write into")
        if self.gguf_adapter is not None and (self.gguf is None or self.adapter is None):
            raise ConfigError("--gguf-adapter needs --gguf (the base GGUF) and --adapter (the adapter directory)",
                              hint="pass --gguf BASE.gguf --adapter DIR --gguf-adapter ADAPTER.gguf")
        return self

    @property
    def generation_metrics(self) -> list[str]:
        names = self.metrics or metric_names()
        return [n for n in names if n != LOSS]


@dataclass
class Evaluation:
    """Everything one run found; ``results`` is what results.json holds."""

    results: EvalResults
    examples: list[Example]
    losses: dict[str | None, LossResult]
    answers: dict[str | None, list[str]] = field(default_factory=dict)
    metric_results: dict[str | None, dict[str, MetricResult]] = field(default_factory=dict)
    training: TrainingSummary = field(default_factory=TrainingSummary)
    adapter_key: str | None = None  # the adapter's name in ``losses`` / ``answers``; None: base only

    @property
    def verdict(self) -> Verdict | None:
        return self.results.verdict


# ---------------------------------------------------------------- inputs


def load_benchmark(source: str, limit: int | None = None, what: str = "benchmark") -> list[Example]:
    from quantgrid.data import load_examples

    if not source.startswith("builtin:") and not Path(source).is_file():
        raise DataError(f"{what} file not found: {source}",
                        hint="pass a JSON/JSONL file of question/answer pairs, or builtin:finance-dev")
    examples = load_examples(source)
    if limit:
        examples = examples[:limit]
    if not examples:
        raise EvalError(f"the {what} {source} is empty: there is nothing to evaluate",
                        hint="add question/answer records to it (`quantgrid data check FILE` validates a file)")
    return examples


def load_patterns(spec: str | None) -> Any:
    """A preset name, or a JSON file holding a list or a {"must": [...], "must_not": [...]} mapping."""
    if spec is None:
        return None
    p = Path(spec)
    if p.suffix.lower() == ".json" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"--patterns file not found: {spec}")
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--patterns {spec}: not valid JSON ({e})") from None
    return spec


@dataclass
class AdapterInfo:
    recipe: Recipe
    base_path: str
    name: str
    manifest: Any = None  # quantgrid.adapter.Manifest when the adapter has one


def resolve_adapter(adapter: Path | None, base_model: str | None) -> AdapterInfo:
    """The recipe and base of an adapter directory (or of the standard recipe, without one)."""
    from quantgrid.adapter import MANIFEST, read_manifest

    if adapter is None:
        recipe = Recipe()
        return AdapterInfo(recipe, base_model or recipe.base_model, "base")
    if not (adapter / lora_files.CONFIG).is_file():
        raise ConfigError(f"--adapter {adapter} is not an adapter directory (no {lora_files.CONFIG})",
                          hint="pass the directory `quantgrid train` wrote")
    manifest = read_manifest(adapter) if (adapter / MANIFEST).is_file() else None
    recipe = Recipe.model_validate(manifest.recipe) if manifest else Recipe()
    base = base_model
    if base is None:
        # The recipe names the base (e.g. quantgrid-tiny-test); train_config.yaml knows
        # where it was loaded from on the training machine.
        base = _trained_base_path(adapter) or recipe.base_model
    return AdapterInfo(recipe, base, adapter.resolve().name, manifest)


def _trained_base_path(adapter: Path) -> str | None:
    import yaml

    cfg = adapter / "training" / "train_config.yaml"
    if not cfg.is_file():
        return None
    try:
        path = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("run", {}).get("base_model_path")
    except (yaml.YAMLError, AttributeError):
        return None
    return path if path and Path(path).is_dir() else None


def check_overlap(examples: list[Example], adapter: Path | None, manifest: Any, train_data: str | None
                  ) -> tuple[Overlap, list[str]]:
    """Is the benchmark (partly) the adapter's training data? Its scores would flatter it.

    The manifest's fingerprint holds only counts and one hash of the whole set, so it
    catches a benchmark that IS the training set; an exact per-item check needs the data
    itself (``training/dataset.jsonl`` when the contributor kept it, or ``train_data``).
    Returns the counts and one warning per finding, for people.
    """
    from quantgrid.data import example_hash, fingerprint, load_examples

    found, warnings = Overlap(), []
    train_fp = (manifest.dataset.fingerprint if manifest else None) or {}
    if train_fp.get("sha256") and train_fp["sha256"] == fingerprint(examples)["sha256"]:
        found.same_fingerprint = True
        warnings.append("the benchmark is the adapter's training set (same dataset fingerprint): "
                        "its scores say nothing about held-out data")
    sources = [s for s in (train_data, adapter / "training" / "dataset.jsonl" if adapter else None)
               if s is not None and Path(s).is_file()]
    if sources:
        train_hashes = {example_hash(ex) for ex in load_examples(sources[0])}
        n = sum(example_hash(ex) in train_hashes for ex in examples)
        found.n_overlapping, found.checked_per_item = n, True
        if n:
            warnings.append(f"{n} of {len(examples)} benchmark items are in the adapter's training data "
                            f"({sources[0]}): the scores overstate the adapter")
    return found, warnings


def overlap_warnings(examples: list[Example], adapter: Path | None, manifest: Any, train_data: str | None) -> list[str]:
    """The warnings of :func:`check_overlap` alone."""
    return check_overlap(examples, adapter, manifest, train_data)[1]


def training_summary(adapter: Path | None, manifest: Any) -> TrainingSummary:
    """What the adapter's records say about its training: example count, final train loss."""
    out = TrainingSummary()
    if manifest is not None:
        fp = manifest.dataset.fingerprint or {}
        if fp.get("n_examples") is not None:
            out.n_examples = int(fp["n_examples"])
        out.non_standard = list(manifest.non_standard)
    log = adapter / "training" / "TRAINING_LOG.md" if adapter else None
    if log is not None and log.is_file():
        train, evals = _losses_from_log(log.read_text(encoding="utf-8"))
        if train:
            out.final_train_loss = sum(train[-3:]) / len(train[-3:])  # a few rows: one batch is noisy
        if evals:
            out.final_eval_loss = evals[-1]
    return out


_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([\d.]*)\s*\|\s*([\d.]*)\s*\|")


def _losses_from_log(text: str) -> tuple[list[float], list[float]]:
    """Train and eval losses from TRAINING_LOG.md's "| step | train loss | eval loss |" table."""
    train, evals = [], []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            if m.group(2):
                train.append(float(m.group(2)))
            if m.group(3):
                evals.append(float(m.group(3)))
    return train, evals


# ---------------------------------------------------------------- judging


def relative(new: float, old: float) -> float | None:
    return (new - old) / abs(old) if old and math.isfinite(old) and math.isfinite(new) else None


def improvement(metric: str, adapter: float | None, base: float | None, higher_is_better: bool = True) -> float | None:
    """LocoLLM's ``improvement``: relative gain over the base, positive when the adapter is better.

    For a metric where lower is better (the loss), that is the relative drop.
    """
    if adapter is None or base is None:
        return None
    rel = relative(adapter, base)
    if rel is None:
        return None
    return -rel if (metric == LOSS or not higher_is_better) else rel


def judge(loss: LossBlock, ood: OodBlock | None, threshold: float) -> Verdict:
    """The minimum bar: lower in-domain loss than the base, OOD loss up by at most ``threshold``."""
    reasons = []
    in_domain = loss.delta is not None and loss.delta < 0
    significant = loss.delta_ci is not None and loss.delta_ci[1] < 0
    if in_domain:
        rel = f" ({-loss.relative_change:.1%})" if loss.relative_change is not None else ""
        reasons.append(f"in domain the adapter lowers the loss by {-loss.delta:.4f} nats/token{rel}"
                       + ("" if significant else ", within noise (CI spans 0)"))
    else:
        reasons.append("in domain the adapter does not lower the loss below the base's")
    ood_ok = True
    if ood is not None:
        change = ood.relative_change
        ood_ok = change is not None and change <= threshold
        reasons.append(f"out of domain the loss changes by {change:+.1%} (allowed: +{threshold:.0%})"
                       if change is not None else "out of domain the loss could not be computed")
    else:
        reasons.append("no out-of-domain set was evaluated")
    return Verdict(passed=bool(in_domain and ood_ok), in_domain_better=bool(in_domain),
                   in_domain_significant=bool(significant), ood_passed=bool(ood_ok) if ood is not None else None,
                   ood_threshold=threshold, reasons=reasons)


def _stats(r: LossResult) -> LossStats:
    return LossStats.model_validate(r.to_dict())


def loss_block(base: LossResult, adapter: LossResult | None, delta_ci: tuple[float, float] | None) -> LossBlock:
    """The benchmark's proof-of-loss block from the two models' losses and a CI of their delta."""
    block = LossBlock(base=_stats(base), padding_fraction=round(base.padding_fraction, 4))
    if adapter is None:
        return block
    block.adapter = _stats(adapter)
    block.delta = adapter.mean - base.mean
    if delta_ci is not None and all(math.isfinite(x) for x in delta_ci):
        block.delta_ci, block.ci_level = [float(delta_ci[0]), float(delta_ci[1])], 0.95
    block.relative_change = relative(adapter.mean, base.mean)
    return block


def ood_block(name: str, base: LossResult, adapter: LossResult, threshold: float) -> OodBlock:
    change = relative(adapter.mean, base.mean)
    return OodBlock(benchmark=name, n_examples=len(base.n_tokens), base=_stats(base), adapter=_stats(adapter),
                    delta=adapter.mean - base.mean, relative_change=change, threshold=threshold,
                    passed=change is not None and change <= threshold)


def loss_results(base: LossResult, adapter: LossResult, *, benchmark: str, base_model: str,
                 delta_ci: tuple[float, float] | None, ood: tuple[LossResult, LossResult] | None = None,
                 ood_name: str = "ood", ood_threshold: float = 0.05) -> EvalResults:
    """Results of a loss-only comparison (what the hub measures), judged like ``quantgrid eval``."""
    loss = loss_block(base, adapter, delta_ci)
    oblock = ood_block(ood_name, ood[0], ood[1], ood_threshold) if ood is not None else None
    return EvalResults(adapter="candidate", base_model=base_model, benchmark=benchmark,
                       n_examples=len(base.n_tokens), metric=LOSS, higher_is_better=False,
                       adapter_score=adapter.mean, base_model_score=base.mean,
                       improvement=improvement(LOSS, adapter.mean, base.mean), loss=loss, ood=oblock,
                       verdict=judge(loss, oblock, ood_threshold))


# ---------------------------------------------------------------- the run


def run_eval(cfg: EvalConfig, *, progress: ProgressFactory | None = None, metric_options: dict | None = None,
             on_warning: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluate per ``cfg`` and write results.json / REPORT.md (see the module docstring).

    ``metric_options`` are passed to every metric that names them (``prices=`` for
    ``alpha_backtest``, ``rel_tol=`` for ``exact_match``...).
    """
    from quantgrid.data import fingerprint
    from quantgrid.eval.generate import generate_answers
    from quantgrid.eval.loss import completion_losses, load_for_eval
    from quantgrid.ml.models import base_info

    examples = load_benchmark(cfg.benchmark, cfg.limit)
    ood_examples = load_benchmark(cfg.ood, None, "out-of-domain set") if cfg.ood and cfg.adapter else None
    patterns = load_patterns(cfg.patterns)
    info = resolve_adapter(cfg.adapter, cfg.base_model)
    recipe = info.recipe
    overlap, warnings = check_overlap(examples, cfg.adapter, info.manifest, cfg.train_data)
    for w in warnings:
        if on_warning:
            on_warning(w)
    base = base_info(info.base_path)
    if cfg.gguf is not None:  # llama.cpp on the GGUF files instead of PyTorch; the same scores otherwise
        from quantgrid.eval import gguf_loss

        load_for_eval, completion_losses, generate_answers = gguf_loss.backend(cfg)
    # Raises AdapterMismatchError naming both bases, before any weights load.
    model, tokenizer, names = load_for_eval(info.base_path, [cfg.adapter] if cfg.adapter else [],
                                            device=cfg.device, load_in_4bit=cfg.load_in_4bit)
    adapter_key = names[0] if names else None
    variants: list[str | None] = [None, *names]
    max_length = cfg.max_length or recipe.training.max_seq_length
    common = dict(template=recipe.prompt_template, system_prompt=recipe.system_prompt, max_length=max_length,
                  batch_tokens=cfg.batch_tokens)

    def bar(desc: str, total: int) -> Callable[[int], None] | None:
        return progress(desc, total) if progress else None

    losses = completion_losses(model, tokenizer, examples, adapters=variants,
                               progress=bar("proof of loss", len(examples) * len(variants)), **common)
    ood_losses = None
    if ood_examples is not None:
        ood_losses = completion_losses(model, tokenizer, ood_examples, adapters=variants,
                                       progress=bar("out-of-domain loss", len(ood_examples) * len(variants)), **common)

    answers: dict[str | None, list[str]] = {}
    metric_results: dict[str | None, dict[str, MetricResult]] = {}
    gen_metrics = cfg.generation_metrics
    if gen_metrics:
        for v in variants:
            label = "generating (adapter)" if v else "generating (base)"
            answers[v] = generate_answers(
                model, tokenizer, examples, template=recipe.prompt_template, system_prompt=recipe.system_prompt,
                adapter=v, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                max_prompt_tokens=max(16, max_length - cfg.max_new_tokens), progress=bar(label, len(examples)))
            metric_results[v] = compute_metrics(gen_metrics, examples, answers[v], patterns=patterns,
                                                **(metric_options or {}))

    ci = None
    if adapter_key is not None:
        ci = bootstrap_delta_ci(losses[None], losses[adapter_key], n=cfg.bootstrap, seed=cfg.seed)
    loss = loss_block(losses[None], losses[adapter_key] if adapter_key else None, ci)
    ood = None
    if ood_losses is not None and adapter_key is not None and cfg.ood is not None:
        ood = ood_block(cfg.ood, ood_losses[None], ood_losses[adapter_key], cfg.ood_threshold)

    metrics_block: dict[str, MetricBlock] = {}
    for name in gen_metrics:
        b = metric_results[None][name]
        a = metric_results[adapter_key][name] if adapter_key else None
        metrics_block[name] = MetricBlock(
            base=MetricScore.model_validate(b.to_dict()), adapter=MetricScore.model_validate(a.to_dict()) if a else None,
            improvement=improvement(name, a.score if a else None, b.score, b.higher_is_better))

    if cfg.primary_metric == LOSS:
        base_score, adapter_score = losses[None].mean, (losses[adapter_key].mean if adapter_key else None)
        higher = False
    else:
        if cfg.primary_metric not in gen_metrics:
            raise ConfigError(f"--primary-metric {cfg.primary_metric} is not among the computed metrics",
                              hint="add it with --metric, or leave --metric out to compute them all")
        pb = metric_results[None][cfg.primary_metric]
        base_score = pb.score
        adapter_score = metric_results[adapter_key][cfg.primary_metric].score if adapter_key else None
        higher = pb.higher_is_better

    quant = getattr(model, "quantization", None) or ("nf4 (4-bit)" if getattr(model, "is_loaded_in_4bit", False)
             or getattr(getattr(model, "get_base_model", lambda: model)(), "is_loaded_in_4bit", False)
             else str(next(model.parameters()).dtype).replace("torch.", ""))
    if adapter_key and ood_examples is None:
        warnings.append("no out-of-domain set: forgetting was not checked")
    results = EvalResults(
        adapter=info.name if cfg.adapter else None, base_model=base.name, quantization=quant,
        benchmark=cfg.benchmark, n_examples=len(examples), metric=cfg.primary_metric,
        adapter_score=_finite(adapter_score), base_model_score=_finite(base_score),
        improvement=improvement(cfg.primary_metric, adapter_score, base_score, higher),
        timestamp=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        higher_is_better=higher, quantgrid_version=__version__, base_fingerprint=base.fingerprint,
        benchmark_fingerprint=fingerprint(examples)["sha256"], recipe_hash=recipe.hash(),
        settings=RunRecord(prompt_template=recipe.prompt_template, max_length=max_length,
                           max_new_tokens=cfg.max_new_tokens if gen_metrics else None, decoding="greedy",
                           bootstrap=cfg.bootstrap, seed=cfg.seed,
                           metrics_requested=[m for m in cfg.metrics if m != LOSS]),
        loss=loss, metrics=metrics_block, ood=ood,
        verdict=judge(loss, ood, cfg.ood_threshold) if adapter_key else None,
        overlap=overlap, warnings=warnings)

    ev = Evaluation(results=results, examples=examples, losses=losses, answers=answers,
                    metric_results=metric_results, training=training_summary(cfg.adapter, info.manifest),
                    adapter_key=adapter_key)
    from quantgrid.eval.report import diagnoses

    results.diagnoses = diagnoses(ev)
    write_outputs(ev, cfg)
    return ev


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def report_path(results_path: Path) -> Path:
    """The report written beside a results file: results.json -> REPORT.md, X_results.json -> X_REPORT.md.

    So a base-only run (``--output eval/base_results.json``) and an out-of-domain run
    (``--output eval/ood_results.json``) never overwrite the adapter run's REPORT.md.
    """
    stem = results_path.stem
    if stem == "results":
        name = "REPORT.md"
    elif stem.endswith(("_results", "-results", ".results")):
        name = stem[: -len("results")] + "REPORT.md"
    else:
        name = stem + ".REPORT.md"
    return results_path.with_name(name)


def write_outputs(ev: Evaluation, cfg: EvalConfig) -> list[Path]:
    """results.json to ``cfg.output`` and its report beside it (:func:`report_path`); with
    ``write_into_adapter``, also the adapter's eval/{benchmark.jsonl, results.json, REPORT.md}
    and its manifest's eval summary."""
    from quantgrid.eval.report import report_markdown

    written: list[Path] = []
    text = ev.results.to_json()
    report = report_markdown(ev)
    if cfg.output is not None:
        written.append(atomic_write_text(cfg.output, text))
        written.append(atomic_write_text(report_path(cfg.output), report))
    if cfg.write_into_adapter and cfg.adapter is not None:
        eval_dir = (cfg.adapter / "eval").resolve()
        if cfg.output is not None and cfg.output.resolve().parent == eval_dir and cfg.output.name != "results.json":
            # A named run (base_results.json, ood_results.json) written into the adapter's eval/
            # folder is its own file; it must not replace the adapter run's results.json.
            return written
        written += write_into_adapter(cfg.adapter, ev, text, report)
    return written


def write_into_adapter(adapter: Path, ev: Evaluation, results_text: str, report: str) -> list[Path]:
    from quantgrid.adapter import MANIFEST, read_manifest, write_manifest
    from quantgrid.data.sets import render_jsonl

    eval_dir = adapter / "eval"
    written = [atomic_write_text(eval_dir / "results.json", results_text),
               atomic_write_text(eval_dir / "REPORT.md", report)]
    bench = eval_dir / "benchmark.jsonl"
    # The contributor's own eval/benchmark.jsonl (LocoLLM's layout) is theirs: never replaced.
    if not bench.is_file():
        written.insert(0, atomic_write_text(bench, render_jsonl(ev.examples)))
    if (adapter / MANIFEST).is_file():
        from quantgrid.card import refresh_adapter_card

        # The model card's eval table and model-index, from the file as written (non-finite numbers are null).
        refresh_adapter_card(adapter, EvalResults.model_validate_json(results_text))
        # Rewrite the manifest last, from the previous one, so every hash covers the new files.
        prev = read_manifest(adapter)
        write_manifest(adapter, recipe=Recipe.model_validate(prev.recipe), base_name=prev.base_model.name,
                       base_fingerprint=prev.base_model.fingerprint, eval_summary=eval_summary(ev.results),
                       previous=prev)
        written.append(adapter / MANIFEST)
    return written


def eval_summary(results: EvalResults) -> dict[str, Any]:
    """The manifest's short version of results.json (aggregates only)."""
    return EvalSummary.of(results).model_dump(mode="json")
