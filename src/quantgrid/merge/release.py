"""Weekly releases: build, gate, version, publish and roll back.

A release is every accepted adapter (releases are cumulative) merged into one plain
PEFT adapter directory, loadable by PEFT and vLLM::

    releases/2026.47/
        adapter_config.json         PEFT's LoraConfig: r = lora_alpha = rank (scaling 1), the
                                    recipe's targets, the base's id (never a local path)
        adapter_model.safetensors
        quantgrid.json              the adapter manifest (base fingerprint, file hashes)
        release.json                what went in: adapters, weights, merge errors, metrics
        RELEASE_NOTES.md            generated from release.json

Versions are CalVer ``YYYY.WW`` (ISO year and week); the Nth release of a week is
``YYYY.WW.N`` (N >= 2).

Pipeline (``run_release``): merge -> evaluate on the hidden benchmark and the
out-of-domain set next to the previous release (or the base, for the first one) ->
gate -> leave-one-out impact per contributor -> publish. Publishing is atomic: the
directory is built in a hidden temp sibling and renamed into place, then the
``commit`` callback (the hub's database transaction) makes it current, then the
``CURRENT`` pointer file is replaced atomically. A crash at any step leaves the
previous release in service.

This module knows nothing of the hub's database: ``quantgrid.hub.server.releases``
feeds it contributions and records the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.errors import ConfigError, Conflict, ModelError, NotFound
from quantgrid.lora_files import CONFIG, WEIGHTS
from quantgrid.merge.methods import (
    LoraFactors,
    impact_weights,
    merge,
)
from quantgrid.merge.schedule import (  # noqa: F401 - re-exported: the release API in one place
    UTC,
    VERSION_RE,
    calver,
    last_slot,
    next_due,
    parse_schedule,
    version_key,
)
from quantgrid.recipe import Recipe
from quantgrid.utils import atomic_dir, atomic_write_text

RELEASE_MANIFEST = "release.json"
RELEASE_NOTES = "RELEASE_NOTES.md"
CURRENT = "CURRENT"

# ------------------------------------------------------------------ adapter files


def read_factors(adapter_dir: str | Path) -> dict[str, LoraFactors]:
    """A PEFT adapter directory's LoRA factors (safetensors only; nothing is unpickled)."""
    from quantgrid.lora_files import is_lora_dir, read_weights

    d = Path(adapter_dir)
    if not is_lora_dir(d):
        raise ModelError(f"{d} is not a PEFT adapter directory (needs {CONFIG} and {WEIGHTS})",
                         hint="pass the directory `quantgrid train` wrote")
    return read_weights(d)


def read_factors_zip(data: bytes) -> dict[str, LoraFactors]:
    """Factors of a submission zip, read in memory (never extracted)."""
    from quantgrid.adapter import is_allowed_file
    from quantgrid.archive import read_zip
    from quantgrid.lora_files import read_config, read_weights

    files = read_zip(data, allowed=is_allowed_file, allowed_dirs=frozenset({"training", "eval"}))
    if CONFIG not in files or WEIGHTS not in files:
        raise ModelError(f"the submission has no {CONFIG} / {WEIGHTS} at its top level")
    return read_weights(files[WEIGHTS], read_config(files[CONFIG]))


def release_config(rank: int, target_modules: Sequence[str], base_model: str | None) -> dict[str, Any]:
    """The LoraConfig arguments of merged factors (scaling 1: r = lora_alpha = rank)."""
    return {"r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none",
            "target_modules": sorted(target_modules), "base_model_name_or_path": base_model}


def write_adapter(out_dir: Path, factors: dict[str, LoraFactors], rank: int, *, base_model: str | None,
                  target_modules: Sequence[str]) -> None:
    """Write factors (scaling 1) as a plain PEFT adapter: PEFT's LoraConfig with r = lora_alpha
    = rank, naming the base by its id (a local base path is never written)."""
    from quantgrid.lora_files import write_adapter as write

    if any(abs(f.scaling - 1.0) > 1e-12 for f in factors.values()):
        raise ModelError("write_adapter expects merged factors with scaling 1")
    write(out_dir, factors, release_config(rank, target_modules, base_model))


# ------------------------------------------------------------------ building


@dataclass
class Contribution:
    """One accepted adapter going into a release."""

    id: str  # the hub's adapter id
    contributor: str
    factors: dict[str, LoraFactors]
    score: float | None = None  # hub-measured loss improvement on the hidden benchmark (nats/token)
    sha256: str | None = None


WEIGHTINGS = ("fit", "equal", "sum", "impact")
VLLM_MAX_RANK = 256  # the largest LoRA rank vLLM serves (--max-lora-rank)


@dataclass
class BuildOptions:
    """How a release is merged.

    ``weighting``: ``fit`` (default: per-adapter weights fitted on the fit half of the hidden
    benchmark, as LoraHub does, starting from equal weights), ``equal`` (the mean update),
    ``sum`` (task arithmetic: every update at full strength), ``impact`` (by measured score).
    ``rank``: a fixed release rank; None (default) is adaptive: the smallest rank that keeps
    ``energy`` of every module's merged update, at most ``max_rank`` (a rank vLLM serves).
    """

    method: str = "svd"
    rank: int | None = None
    weighting: str = "fit"
    options: dict[str, Any] = field(default_factory=dict)  # density, trim, seed
    energy: float = 0.99
    max_rank: int = VLLM_MAX_RANK
    weights: dict[str, float] | None = None  # explicit weight per adapter id (set by fitting)


def _weights(contribs: Sequence[Contribution], opts: BuildOptions) -> list[float] | None:
    if opts.weights is not None:
        missing = [c.id for c in contribs if c.id not in opts.weights]
        if missing:
            raise ConfigError(f"no merge weight for adapter(s) {', '.join(missing)}")
        return [float(opts.weights[c.id]) for c in contribs]
    if opts.weighting in ("equal", "fit"):  # fit starts from (and without an evaluator is) equal
        return None
    if opts.weighting == "sum":
        return [1.0] * len(contribs)
    if opts.weighting == "impact":
        return impact_weights([c.score if c.score is not None else 0.0 for c in contribs])
    raise ConfigError(f"unknown weighting {opts.weighting!r}", hint=f"use one of {', '.join(WEIGHTINGS)}")


def merge_contributions(contribs: Sequence[Contribution], recipe: Recipe, opts: BuildOptions):
    """-> (MergeResult, contributions in merge order). Weights are never self-reported."""
    from quantgrid.merge.methods import energy_rank

    if not contribs:
        raise ConfigError("no accepted adapters to release", hint="a release needs at least one accepted adapter")
    # Sort by id so the merge input (and the manifest) never depend on database order.
    contribs = sorted(contribs, key=lambda c: c.id)
    weights = _weights(contribs, opts)
    if opts.rank:
        res = merge([c.factors for c in contribs], weights, method=opts.method, rank=opts.rank, **opts.options)
        return res, contribs
    full = sum(max(f.rank for f in c.factors.values()) for c in contribs)  # exact below this rank
    res = merge([c.factors for c in contribs], weights, method=opts.method, rank=min(full, opts.max_rank),
                **opts.options)
    return (res if opts.method == "cat" else energy_rank(res, opts.energy, opts.max_rank)), contribs


def build_release(out_dir: Path, contribs: Sequence[Contribution], recipe: Recipe, *, version: str,
                  base_path: str, opts: BuildOptions, now: dt.datetime) -> dict[str, Any]:
    """Merge into ``out_dir`` (an empty directory) and return the release manifest (no metrics yet)."""
    from quantgrid.adapter import write_manifest
    from quantgrid.data.chat_template import save_chat_template
    from quantgrid.lora_files import base_id
    from quantgrid.ml.models import base_info, load_tokenizer

    res, ordered = merge_contributions(contribs, recipe, opts)
    # The hub's recipe often names its base by a local directory: the release's config names
    # the base's id instead (its quantgrid_base.json name, else the recipe's Hugging Face id).
    write_adapter(out_dir, res.factors, res.rank, base_model=base_id(base_path) or base_id(recipe.base_model),
                  target_modules=recipe.lora.target_modules)
    # The recipe's prompt as the tokenizer's chat template, as every adapter directory has it.
    save_chat_template(out_dir, load_tokenizer(base_path), recipe.prompt_template, recipe.system_prompt)
    info = base_info(base_path)
    rel_recipe = Recipe.from_dict({**recipe.model_dump(mode="json"),
                                   "lora": {**recipe.lora.model_dump(), "r": res.rank, "alpha": res.rank}})
    write_manifest(out_dir, recipe=rel_recipe, base_name=info.name, base_fingerprint=info.fingerprint,
                   author=f"quantgrid release {version}",
                   dataset_description=f"merge of {len(ordered)} accepted adapters")
    # Per-adapter merge error: how much of that adapter's own delta-W the release's rank-r
    # subspace cannot hold, measured in factor space (exact, no dense matrix).
    manifest = {
        "version": version, "created_at": now.astimezone(UTC).isoformat(), "base_model": recipe.base_model,
        "base_fingerprint": info.fingerprint, "recipe_hash": recipe.hash(),
        "method": res.method, "rank": res.rank, "weighting": opts.weighting, "options": opts.options,
        "merge_error": {"max": res.max_error, "mean": res.mean_error, "per_module": res.errors},
        "adapters": [{"id": c.id, "contributor": c.contributor, "weight": w, "score": c.score, "sha256": c.sha256,
                      "merge_error": _adapter_error(res.factors, c.factors)}
                     for c, w in zip(ordered, res.weights, strict=True)],
        "contributors": sorted({c.contributor for c in ordered}),
    }
    return manifest


def _adapter_error(release: dict[str, LoraFactors], adapter: dict[str, LoraFactors]) -> float:
    """The share of this adapter's own delta-W outside the release's subspace (0 = fully kept)."""
    from quantgrid.merge.methods import subspace_error

    return subspace_error(release, adapter)


# ------------------------------------------------------------------ evaluation and gate


@dataclass
class GateResult:
    passed: bool
    reason: str


def compare(prev, new, *, seed: int = 0) -> dict[str, Any]:
    """Loss of ``new`` minus ``prev`` (LossResults on the same examples) with a paired bootstrap 95% CI."""
    from quantgrid.eval.loss import bootstrap_delta_ci

    lo, hi = bootstrap_delta_ci(prev, new, seed=seed)
    return {"previous": prev.mean, "new": new.mean, "delta": new.mean - prev.mean, "ci95": [lo, hi]}


def gate(metrics: dict[str, Any], *, tolerance: float = 0.0, ood_tolerance: float = 0.05) -> GateResult:
    """Publish only if the release is no worse than the previous one (or the base, at first).

    Worse on the hidden benchmark means: the loss rose by more than ``tolerance`` AND the
    bootstrap interval lies entirely above zero (so noise alone cannot block a release).
    Out of domain, the loss may not rise by more than ``ood_tolerance`` (relative, 0.05 = 5%).
    """
    b, o = metrics["benchmark"], metrics.get("ood")
    if b["delta"] > tolerance and b["ci95"][0] > 0:
        return GateResult(False, f"worse than {metrics['against']} on the hidden benchmark: loss "
                                 f"{b['previous']:.4f} -> {b['new']:.4f} nats/token (+{b['delta']:.4f}, "
                                 f"95% CI [{b['ci95'][0]:.4f}, {b['ci95'][1]:.4f}])")
    if o is not None and o["delta"] > ood_tolerance * o["previous"]:
        return GateResult(False, f"out-of-domain loss rose by {o['delta']:.4f} nats/token "
                                 f"({o['delta'] / o['previous']:+.1%}) against {metrics['against']} "
                                 f"(allowed +{ood_tolerance:.1%})")
    return GateResult(True, f"no worse than {metrics['against']}: benchmark {b['delta']:+.4f}"
                            + (f", out-of-domain {o['delta']:+.4f}" if o else "") + " nats/token")


class Evaluator:
    """The base loaded once; adapters attached by name; losses on the benchmark and OOD set."""

    def __init__(self, base_path: str, recipe: Recipe, benchmark, ood=(), *, device: str | None = None):
        from quantgrid.eval.loss import load_for_eval

        self.recipe, self.benchmark, self.ood = recipe, list(benchmark), list(ood)
        if not self.benchmark:
            raise ConfigError("the hidden benchmark is empty", hint="the hub needs benchmark items to gate releases")
        self.model, self.tokenizer, _ = load_for_eval(base_path, [], device=device, check_base=False)
        self._n = 0

    def add(self, adapter_dir: Path) -> str:
        from quantgrid.ml.models import load_adapter

        self._n += 1
        name = f"release_eval_{self._n}"
        self.model = load_adapter(self.model, adapter_dir, adapter_name=name)
        if self.model.active_adapter not in self.model.peft_config:  # every earlier adapter was removed
            self.model.set_adapter(name)
        return name

    def add_factors(self, factors: dict[str, LoraFactors], rank: int, tmp: Path) -> str:
        """Attach merged factors (scaling 1) written as a PEFT adapter under ``tmp``."""
        self._n += 1
        d = Path(tmp) / f"factors_{self._n}"
        d.mkdir(parents=True, exist_ok=True)
        write_adapter(d, factors, rank, base_model=self.recipe.base_model,
                      target_modules=self.recipe.lora.target_modules)
        return self.add(d)

    def remove(self, name: str) -> None:
        remaining = [a for a in getattr(self.model, "peft_config", {}) if a != name]
        if remaining and self.model.active_adapter == name:
            self.model.set_adapter(remaining[0])  # PEFT cannot delete the active adapter's config otherwise
        self.model.delete_adapter(name)

    def losses(self, names: Sequence[str | None], which: str | Sequence = "benchmark") -> dict:
        from quantgrid.eval.loss import completion_losses

        if isinstance(which, str):
            examples = self.benchmark if which == "benchmark" else self.ood
        else:
            examples = list(which)
        return completion_losses(self.model, self.tokenizer, examples, template=self.recipe.prompt_template,
                                 system_prompt=self.recipe.system_prompt,
                                 max_length=self.recipe.training.max_seq_length, adapters=list(names))


def evaluate_release(ev: Evaluator, new_dir: Path, previous_dir: Path | None) -> tuple[dict[str, Any], dict]:
    """Metrics of the new release against the previous one (or the base). Returns (metrics, names)."""
    new = ev.add(new_dir)
    prev = ev.add(previous_dir) if previous_dir is not None else None
    names = [None, new] + ([prev] if prev else [])
    bench = ev.losses(names, "benchmark")
    metrics: dict[str, Any] = {"against": "the previous release" if prev else "the base model",
                               "base_loss": bench[None].mean, "n_benchmark": len(ev.benchmark)}
    metrics["benchmark"] = compare(bench[prev], bench[new])
    metrics["improvement_over_base"] = bench[None].mean - bench[new].mean
    if ev.ood:
        ood = ev.losses(names, "ood")
        metrics["ood"] = compare(ood[prev], ood[new])
        metrics["n_ood"] = len(ev.ood)
    return metrics, {"new": new, "previous": prev, "bench": bench}


def leave_one_out(ev: Evaluator, contribs: Sequence[Contribution], recipe: Recipe, opts: BuildOptions,
                  release_loss: float, *, progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Per contributor: benchmark loss of the release without their adapters minus with them.

    Positive = the contributor's adapters make the release better. A sole contributor's
    counterfactual is the base model.
    """
    people = sorted({c.contributor for c in contribs})
    out: dict[str, float] = {}
    base_loss = None
    for person in people:
        rest = [c for c in contribs if c.contributor != person]
        if progress:
            progress(person)
        if not rest:
            if base_loss is None:
                base_loss = ev.losses([None])[None].mean
            out[person] = base_loss - release_loss
            continue
        with tempfile.TemporaryDirectory(prefix=f"qg-loo-{os.getpid()}-") as tmp:
            res, _ = merge_contributions(rest, recipe, opts)
            write_adapter(Path(tmp), res.factors, res.rank, base_model=recipe.base_model,
                          target_modules=recipe.lora.target_modules)
            name = ev.add(Path(tmp))
            try:
                out[person] = ev.losses([name])[name].mean - release_loss
            finally:
                ev.remove(name)
    return out


# ------------------------------------------------------------------ release quality


def topic_slices(examples: Sequence) -> dict[str, list[int]]:
    """Indices of benchmark items by ``meta["topic"]`` (items without one: "other")."""
    out: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        out.setdefault(str((ex.meta or {}).get("topic") or "other"), []).append(i)
    return out


def single_losses(ev: Evaluator, contribs: Sequence[Contribution], tmp: Path):
    """(base, {adapter id: LossResult}) on the whole hidden benchmark: each accepted adapter alone."""
    names = {}
    for c in contribs:
        one = merge([c.factors], [1.0], method="svd", rank=max(f.rank for f in c.factors.values()))
        names[c.id] = ev.add_factors(one.factors, one.rank, tmp)
    try:
        ls = ev.losses([None, *names.values()])
    finally:
        for name in names.values():
            ev.remove(name)
    return ls[None], {k: ls[v] for k, v in names.items()}


def split_benchmark(examples: Sequence) -> tuple[list[int], list[int]]:
    """(fit, held-out) indices: every other item of each topic slice, so both halves cover
    every topic. The release's weights are fitted on the first, its quality measured on the second."""
    fit: list[int] = []
    held: list[int] = []
    for idx in topic_slices(examples).values():
        fit += idx[0::2]
        held += idx[1::2]
    return sorted(fit), sorted(held)


def _slice_means(loss, slices: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for topic, idx in slices.items():
        tokens = sum(loss.n_tokens[i] for i in idx)
        out[topic] = sum(loss.nll[i] for i in idx) / tokens if tokens else math.nan
    return out


def _mean(loss, idx: Sequence[int]) -> float:
    tokens = sum(loss.n_tokens[i] for i in idx)
    return sum(loss.nll[i] for i in idx) / tokens if tokens else math.nan


def quality(base, release, singles: dict[str, Any], examples: Sequence, idx: Sequence[int],
            contributors: dict[str, str], target: float = 0.8) -> dict[str, Any]:
    """The release against the base and each accepted adapter alone, per topic slice and overall.

    ``base``, ``release`` and ``singles[id]`` are LossResults on ``examples``; only items
    ``idx`` count. An adapter's own slice is the topic where it gains most over the base;
    retention = (base - release) / (base - adapter) there.
    """
    sub = [examples[i] for i in idx]
    slices = {t: [idx[j] for j in js] for t, js in topic_slices(sub).items()}
    b, r = _slice_means(base, slices), _slice_means(release, slices)
    per = {k: _slice_means(v, slices) for k, v in singles.items()}
    overall = {"base": _mean(base, idx), "release": _mean(release, idx),
               "adapters": {k: _mean(v, idx) for k, v in singles.items()}}
    best_id = min(overall["adapters"], key=lambda k: overall["adapters"][k]) if singles else None
    retention = {}
    for k, p in per.items():
        gains = {t: b[t] - p[t] for t in slices}
        own = max(gains, key=lambda t: gains[t]) if gains else None
        ret = (b[own] - r[own]) / gains[own] if own is not None and gains[own] > 0 else None
        retention[k] = {"contributor": contributors.get(k), "own_slice": own, "adapter_gain": gains.get(own),
                        "release_gain": (b[own] - r[own]) if own else None, "retention": ret}
    rets = [v["retention"] for v in retention.values() if v["retention"] is not None]
    return {
        "n_items": len(idx), "split": "held-out half of the hidden benchmark",
        "slices": {t: {"n_items": len(slices[t]), "base": b[t], "release": r[t],
                       "adapters": {k: per[k][t] for k in per}} for t in sorted(slices)},
        "overall": overall,
        "best_single": {"id": best_id, "loss": overall["adapters"][best_id]} if best_id else None,
        "beats_best_single": bool(best_id is not None and overall["release"] < overall["adapters"][best_id]),
        "margin_vs_best_single": (overall["adapters"][best_id] - overall["release"]) if best_id else None,
        "retention": retention, "min_retention": min(rets) if rets else None, "retention_target": target,
        "keeps_target": bool(rets) and min(rets) >= target,
    }


def fit_weights(ev: Evaluator, contribs: Sequence[Contribution], recipe: Recipe, opts: BuildOptions,
                fit_idx: Sequence[int], tmp: Path, base, singles: dict[str, Any], *, rounds: int = 4, retention_target: float = 0.8,
                log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-adapter merge weights fitted on the fit half of the hidden benchmark (LoraHub-style
    gradient-free coordinate search from equal weights).

    The objective is the fit half's loss plus, for every adapter, the shortfall of its own-slice
    retention below ``retention_target`` times its own-slice gain (both in nats/token), so the
    search does not buy a lower mean by dropping a contributor. Returns (weights by id, trace).
    """
    ordered = sorted(contribs, key=lambda c: c.id)
    n = len(ordered)
    sub = [ev.benchmark[i] for i in fit_idx]
    slices = {t: [fit_idx[j] for j in js] for t, js in topic_slices(sub).items()}
    b = _slice_means(base, slices)
    own = {}
    for c in ordered:
        p = _slice_means(singles[c.id], slices)
        t = max(slices, key=lambda t: b[t] - p[t])
        own[c.id] = (t, b[t] - p[t])

    def objective(ws: list[float]) -> float:
        trial = BuildOptions(**{**opts.__dict__, "weights": {c.id: w for c, w in zip(ordered, ws, strict=True)}})
        res, _ = merge_contributions(ordered, recipe, trial)
        name = ev.add_factors(res.factors, res.rank, tmp)
        try:
            loss = ev.losses([name])[name]
        finally:
            ev.remove(name)
        value = _mean(loss, fit_idx)
        if retention_target > 0:
            r = _slice_means(loss, slices)
            for t, gain in own.values():
                if gain > 0:
                    value += max(0.0, retention_target - (b[t] - r[t]) / gain) * gain
        return value

    ws = [1.0 / n] * n
    best = objective(ws)
    trace = {"start": best, "evaluations": 1}
    step = 0.5 / n
    for _ in range(rounds):
        for j in range(n):
            for sign in (1.0, -1.0):
                trial = list(ws)
                trial[j] = max(0.0, trial[j] + sign * step)
                value = objective(trial)
                trace["evaluations"] += 1
                if value < best - 1e-6:
                    ws, best = trial, value
                    break
        step /= 2
        log(f"fitting weights: objective {best:.4f} after {trace['evaluations']} evaluations")
    trace["end"] = best
    return {c.id: w for c, w in zip(ordered, ws, strict=True)}, trace


# ------------------------------------------------------------------ trial merge (validation)


def trial_merge(current_release_dir: str | Path, candidate_dir: str | Path, out_dir: str | Path | None = None,
                *, method: str = "svd") -> Path:
    """The current release with one candidate merged in, as the next release would be.

    With equal weights and N adapters in the release, the next release is
    ``N/(N+1) * release + 1/(N+1) * candidate``; the release's rank is kept. Writes a
    PEFT adapter directory (a temp dir if ``out_dir`` is None; the caller deletes it).
    """
    from quantgrid.lora_files import read_config

    cur = Path(current_release_dir)
    manifest = json.loads((cur / RELEASE_MANIFEST).read_text()) if (cur / RELEASE_MANIFEST).is_file() else {}
    n = max(1, len(manifest.get("adapters", [])))
    cfg = read_config(cur)
    res = merge([read_factors(cur), read_factors(candidate_dir)], [n / (n + 1), 1 / (n + 1)], method=method,
                rank=int(cfg["r"]))
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix=f"qg-trial-{os.getpid()}-"))
    out.mkdir(parents=True, exist_ok=True)
    write_adapter(out, res.factors, res.rank, base_model=cfg.get("base_model_name_or_path"),
                  target_modules=cfg["target_modules"])
    return out


def degrades_release(current, trial, *, tolerance: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Judge a trial merge: ``current`` and ``trial`` are LossResults on the hidden benchmark.

    The candidate "degrades the release" when the trial's loss is higher by more than
    ``tolerance`` and the paired bootstrap 95% interval of the difference excludes zero.
    """
    c = compare(current, trial, seed=seed)
    c["degrades"] = bool(c["delta"] > tolerance and c["ci95"][0] > 0)
    return c


# ------------------------------------------------------------------ notes


def release_notes(manifest: dict[str, Any]) -> str:
    """Markdown release notes generated from the release manifest."""
    m, met = manifest, manifest.get("metrics") or {}
    lines = [f"# quantgrid release {m['version']}", "",
             f"Released {m['created_at'][:16].replace('T', ' ')} UTC. Base model `{m['base_model']}`, "
             f"{len(m['adapters'])} adapter(s) from {len(m['contributors'])} contributor(s), merged with "
             f"`{m['method']}` to rank {m['rank']} ({m['weighting']} weights).", ""]
    if met:
        b = met["benchmark"]
        lines += ["## Quality", "", "| set | " + met["against"] + " | this release | change | 95% CI |",
                  "|---|---|---|---|---|",
                  f"| hidden benchmark (nats/token) | {b['previous']:.4f} | {b['new']:.4f} | {b['delta']:+.4f} "
                  f"| [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}] |"]
        if "ood" in met:
            o = met["ood"]
            lines.append(f"| out-of-domain (nats/token) | {o['previous']:.4f} | {o['new']:.4f} | {o['delta']:+.4f} "
                         f"| [{o['ci95'][0]:+.4f}, {o['ci95'][1]:+.4f}] |")
        lines += ["", f"Improvement over the base model: {met['improvement_over_base']:+.4f} nats/token.", ""]
    if m.get("gate"):
        lines += [f"Gate: {'passed' if m['gate']['passed'] else 'FAILED'} — {m['gate']['reason']}.", ""]
    lines += quality_markdown(m.get("quality"))
    lines += ["## Adapters", "", "| adapter | contributor | weight | merge error |", "|---|---|---|---|"]
    lines += [f"| {a['id']} | {a['contributor']} | {a['weight']:.4f} | {a['merge_error']:.2e} |" for a in m["adapters"]]
    if m.get("impact"):
        lines += ["", "## Contributor impact (leave-one-out)", "",
                  "Loss of the release without the contributor's adapters minus with them (nats/token; "
                  "positive helps).", "", "| contributor | impact |", "|---|---|"]
        lines += [f"| {k} | {v:+.4f} |" for k, v in sorted(m["impact"].items(), key=lambda kv: -kv[1])]
    me = m["merge_error"]
    lines += ["", f"Merge truncation error (relative Frobenius, per module): max {me['max']:.2e}, "
                  f"mean {me['mean']:.2e}.", ""]
    return "\n".join(lines)


def quality_markdown(q: dict[str, Any] | None) -> list[str]:
    """The release-quality table (per topic slice and overall: base, release, each adapter alone)."""
    if not q:
        return []
    ids = list(q["overall"]["adapters"])

    def cell(x):
        return "n/a" if x is None else f"{x:.4f}"

    lines = ["## Release against each adapter alone", "",
             f"Mean loss (nats/token) on {q['n_items']} items, {q['split']}; lower is better.", "",
             "| slice | items | base | release | " + " | ".join(f"adapter {i}" for i in ids) + " |",
             "|---|---|---|---|" + "---|" * len(ids)]
    for t, row in q["slices"].items():
        lines.append(f"| {t} | {row['n_items']} | {cell(row['base'])} | {cell(row['release'])} | "
                     + " | ".join(cell(row["adapters"][i]) for i in ids) + " |")
    o = q["overall"]
    lines.append(f"| **overall** | {q['n_items']} | {cell(o['base'])} | {cell(o['release'])} | "
                 + " | ".join(cell(o["adapters"][i]) for i in ids) + " |")
    best = q.get("best_single") or {}
    lines += ["", f"Best single adapter: {best.get('id')} at {cell(best.get('loss'))}; the release is "
                  f"{'better' if q['beats_best_single'] else 'NOT better'} by {cell(q['margin_vs_best_single'])}.",
              "", "| adapter | contributor | own slice | adapter gain | release gain | retention |", "|---|---|---|---|---|---|"]
    for i, r in q["retention"].items():
        ret = "n/a" if r["retention"] is None else f"{r['retention']:.0%}"
        lines.append(f"| {i} | {r['contributor']} | {r['own_slice']} | {cell(r['adapter_gain'])} | "
                     f"{cell(r['release_gain'])} | {ret} |")
    lines.append("")
    return lines


# ------------------------------------------------------------------ the release store


class ReleaseStore:
    """``<root>/<version>/`` directories plus a ``CURRENT`` pointer file, all written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @contextlib.contextmanager
    def lock(self):
        """One release at a time per store (a scheduled job and a manual `hub release` may meet).

        An OS file lock: released by the kernel if the process dies, so a crash never wedges it.
        """
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict("another release is being built right now",
                               hint="wait for it to finish; `quantgrid releases` shows the result") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir()
                       if p.is_dir() and VERSION_RE.match(p.name) and (p / RELEASE_MANIFEST).is_file()), key=version_key)

    def path(self, version: str) -> Path:
        version_key(version)  # validates: never a path outside the store
        p = self.root / version
        if not (p / RELEASE_MANIFEST).is_file():
            raise NotFound(f"release {version} does not exist",
                           hint=f"known releases: {', '.join(self.versions()) or 'none'}")
        return p

    def current(self) -> str | None:
        p = self.root / CURRENT
        if not p.is_file():
            return None
        v = p.read_text().strip()
        return v if v in self.versions() else None

    def current_dir(self) -> Path | None:
        v = self.current()
        return self.root / v if v else None

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads((self.path(version) / RELEASE_MANIFEST).read_text())

    def set_current(self, version: str) -> None:
        self.path(version)
        atomic_write_text(self.root / CURRENT, version + "\n")

    def staging(self, version: str):
        """Context manager: a temp directory renamed to ``<root>/<version>`` on success."""
        version_key(version)
        if (self.root / version).exists():
            # A directory nobody made current (a crash after the rename, before the commit).
            if self.current() == version:
                raise ConfigError(f"release {version} already exists and is current")
            shutil.rmtree(self.root / version)
        return atomic_dir(self.root / version)


# ------------------------------------------------------------------ the whole release


@dataclass
class ReleaseOutcome:
    version: str
    published: bool
    dry_run: bool
    reason: str
    manifest: dict[str, Any]
    path: Path | None = None


def run_release(contribs: Sequence[Contribution], store: ReleaseStore, *, recipe: Recipe, base_path: str,
                benchmark, ood=(), opts: BuildOptions | None = None, now: dt.datetime | None = None,
                existing_versions: Sequence[str] | None = None, previous_dir: Path | None = None, dry_run: bool = False,
                tolerance: float = 0.0, ood_tolerance: float = 0.05, loo: bool = True,
                retention_target: float = 0.8,
                commit: Callable[[str, Path, dict[str, Any]], None] | None = None,
                log: Callable[[str], None] = lambda s: None) -> ReleaseOutcome:
    """Build, evaluate, gate and (unless ``dry_run`` or the gate fails) publish a release.

    ``existing_versions`` are the versions already used (default: the store's directories).

    ``commit(version, path, manifest)`` runs after the directory is in place and before the
    CURRENT pointer moves: the hub records the release in its database there. If it
    raises, the previous release stays current.
    """
    opts = opts or BuildOptions()
    now = now or dt.datetime.now(UTC)
    # The hub passes its database's versions (the source of truth); a directory no row
    # points to is debris of a crash and its name is reused.
    version = calver(now, store.versions() if existing_versions is None else existing_versions)
    previous_dir = previous_dir if previous_dir is not None else store.current_dir()
    log(f"building {version} from {len(contribs)} adapter(s) with {opts.method}")
    with tempfile.TemporaryDirectory(prefix=f"qg-release-{os.getpid()}-") as tmp:
        work = Path(tmp) / version
        work.mkdir()
        scratch = Path(tmp) / "scratch"
        ev = Evaluator(base_path, recipe, benchmark, ood)
        log(f"scoring each of the {len(contribs)} accepted adapter(s) alone")
        base_l, singles = single_losses(ev, contribs, scratch)
        fit_idx, held_idx = split_benchmark(ev.benchmark)
        fit_trace = None
        if opts.weighting == "fit" and opts.weights is None and len(contribs) > 1 and fit_idx and held_idx:
            weights, fit_trace = fit_weights(ev, contribs, recipe, opts, fit_idx, scratch, base_l, singles,
                                             retention_target=retention_target, log=log)
            opts = dataclasses.replace(opts, weights=weights)
        else:
            held_idx = list(range(len(ev.benchmark)))  # nothing fitted: every item is held out
        manifest = build_release(work, contribs, recipe, version=version, base_path=base_path, opts=opts, now=now)
        log(f"merged to rank {manifest['rank']}: max truncation error {manifest['merge_error']['max']:.2e}; "
            "evaluating")
        metrics, names = evaluate_release(ev, work, previous_dir)
        metrics["n_adapters"] = len(contribs)
        manifest["metrics"] = _json_safe(metrics)
        q = quality(base_l, names["bench"][names["new"]], singles, ev.benchmark, held_idx,
                    {c.id: c.contributor for c in contribs}, target=retention_target)
        if fit_trace is not None:
            q["fit"] = {"n_items": len(fit_idx), **fit_trace}
        else:
            q["split"] = "the whole hidden benchmark (no weights were fitted)"
        manifest["quality"] = _json_safe(q)
        log(_quality_line(q))
        manifest["previous"] = previous_dir.name if previous_dir is not None else None
        g = gate(metrics, tolerance=tolerance, ood_tolerance=ood_tolerance)
        manifest["gate"] = {"passed": g.passed, "reason": g.reason}
        log(f"gate {'passed' if g.passed else 'failed'}: {g.reason}")
        if loo and g.passed:
            if names["previous"]:
                ev.remove(names["previous"])  # free memory before the leave-one-out merges
            manifest["impact"] = _json_safe(leave_one_out(
                ev, contribs, recipe, opts, names["bench"][names["new"]].mean,
                progress=lambda p: log(f"leave-one-out: {p}")))
        _write_meta(work, manifest)
        if dry_run or not g.passed:
            reason = "dry run: nothing published" if dry_run and g.passed else g.reason
            return ReleaseOutcome(version, False, dry_run, reason, manifest)
        with store.staging(version) as final:
            for p in work.iterdir():
                shutil.copy2(p, final / p.name)
        path = store.root / version
        if commit is not None:
            try:
                commit(version, path, manifest)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)  # never made current: remove it
                raise
        store.set_current(version)
        log(f"published {version}")
        return ReleaseOutcome(version, True, False, g.reason, manifest, path)


def _quality_line(q: dict[str, Any]) -> str:
    best = q.get("best_single") or {}
    ret = q.get("min_retention")
    return (f"quality on {q['n_items']} held-out items: release {q['overall']['release']:.4f}, best single adapter "
            f"{best.get('loss', math.nan):.4f} ({'beaten' if q['beats_best_single'] else 'NOT beaten'}), base "
            f"{q['overall']['base']:.4f}; lowest own-topic retention "
            + (f"{ret:.0%}" if ret is not None else "n/a") + f" (target {q['retention_target']:.0%})")


def _write_meta(d: Path, manifest: dict[str, Any]) -> None:
    (d / RELEASE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (d / RELEASE_NOTES).write_text(release_notes(manifest))
    from quantgrid.card import CARD, release_card

    (d / CARD).write_text(release_card(manifest))  # the Hugging Face model card


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x
