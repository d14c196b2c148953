"""Weekly releases: build, gate, version, publish and roll back.

A release is every accepted adapter (releases are cumulative) merged into one plain
PEFT adapter directory, loadable by PEFT and vLLM::

    releases/2026.47/
        adapter_config.json         r = lora_alpha = rank (scaling 1), the recipe's targets
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
import datetime as dt
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.errors import ConfigError, Conflict, ModelError, NotFound
from quantgrid.merge.methods import (
    LoraFactors,
    factors_from_state_dict,
    impact_weights,
    merge,
    state_dict_from_factors,
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
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg.is_file() or not weights.is_file():
        raise ModelError(f"{d} is not a PEFT adapter directory (needs adapter_config.json and "
                         "adapter_model.safetensors)", hint="pass the directory `quantgrid train` wrote")
    return factors_from_state_dict(load_file(str(weights)), json.loads(cfg.read_text()))


def read_factors_zip(data: bytes) -> dict[str, LoraFactors]:
    """Factors of a submission zip, read in memory (never extracted)."""
    from safetensors.torch import load

    from quantgrid.adapter import is_allowed_file
    from quantgrid.archive import read_zip

    files = read_zip(data, allowed=is_allowed_file, allowed_dirs=frozenset({"training", "eval"}))
    if "adapter_config.json" not in files or "adapter_model.safetensors" not in files:
        raise ModelError("the submission has no adapter_config.json / adapter_model.safetensors at its top level")
    return factors_from_state_dict(load(files["adapter_model.safetensors"]), json.loads(files["adapter_config.json"]))


def write_adapter(out_dir: Path, factors: dict[str, LoraFactors], rank: int, *, base_model: str,
                  target_modules: Sequence[str]) -> None:
    """Write factors (scaling 1) as a plain PEFT adapter: config with r = lora_alpha = rank."""
    from safetensors.torch import save_file

    if any(abs(f.scaling - 1.0) > 1e-12 for f in factors.values()):
        raise ModelError("write_adapter expects merged factors with scaling 1")
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": sorted(target_modules), "inference_mode": True, "init_lora_weights": True,
        "use_rslora": False, "use_dora": False, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(state_dict_from_factors(factors), str(out_dir / "adapter_model.safetensors"),
              metadata={"format": "pt"})


# ------------------------------------------------------------------ building


@dataclass
class Contribution:
    """One accepted adapter going into a release."""

    id: str  # the hub's adapter id
    contributor: str
    factors: dict[str, LoraFactors]
    score: float | None = None  # hub-measured loss improvement on the hidden benchmark (nats/token)
    sha256: str | None = None


@dataclass
class BuildOptions:
    method: str = "svd"
    rank: int | None = None  # default: the recipe's r
    weighting: str = "equal"  # or "impact": proportional to each adapter's measured score
    options: dict[str, Any] = field(default_factory=dict)  # density, trim, seed


def merge_contributions(contribs: Sequence[Contribution], recipe: Recipe, opts: BuildOptions):
    """-> (MergeResult, weights). Weights are equal, or by measured impact (never self-reported)."""
    if not contribs:
        raise ConfigError("no accepted adapters to release", hint="a release needs at least one accepted adapter")
    if opts.weighting == "equal":
        weights = None
    elif opts.weighting == "impact":
        weights = impact_weights([c.score if c.score is not None else 0.0 for c in contribs])
    else:
        raise ConfigError(f"unknown weighting {opts.weighting!r}", hint="use equal or impact")
    # Sort by id so the merge input (and the manifest) never depend on database order.
    order = sorted(range(len(contribs)), key=lambda i: contribs[i].id)
    contribs = [contribs[i] for i in order]
    weights = None if weights is None else [weights[i] for i in order]
    res = merge([c.factors for c in contribs], weights, method=opts.method, rank=opts.rank or recipe.lora.r,
                **opts.options)
    return res, contribs


def build_release(out_dir: Path, contribs: Sequence[Contribution], recipe: Recipe, *, version: str,
                  base_path: str, opts: BuildOptions, now: dt.datetime) -> dict[str, Any]:
    """Merge into ``out_dir`` (an empty directory) and return the release manifest (no metrics yet)."""
    from quantgrid.adapter import write_manifest
    from quantgrid.data.chat_template import save_chat_template
    from quantgrid.ml.models import base_info, load_tokenizer

    res, ordered = merge_contributions(contribs, recipe, opts)
    write_adapter(out_dir, res.factors, res.rank, base_model=recipe.base_model,
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
        return name

    def remove(self, name: str) -> None:
        self.model.delete_adapter(name)

    def losses(self, names: Sequence[str | None], which: str = "benchmark") -> dict:
        from quantgrid.eval.loss import completion_losses

        examples = self.benchmark if which == "benchmark" else self.ood
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
        with tempfile.TemporaryDirectory(prefix="qg-loo-") as tmp:
            res, _ = merge_contributions(rest, recipe, opts)
            write_adapter(Path(tmp), res.factors, res.rank, base_model=recipe.base_model,
                          target_modules=recipe.lora.target_modules)
            name = ev.add(Path(tmp))
            try:
                out[person] = ev.losses([name])[name].mean - release_loss
            finally:
                ev.remove(name)
    return out


# ------------------------------------------------------------------ trial merge (validation)


def trial_merge(current_release_dir: str | Path, candidate_dir: str | Path, out_dir: str | Path | None = None,
                *, method: str = "svd") -> Path:
    """The current release with one candidate merged in, as the next release would be.

    With equal weights and N adapters in the release, the next release is
    ``N/(N+1) * release + 1/(N+1) * candidate``; the release's rank is kept. Writes a
    PEFT adapter directory (a temp dir if ``out_dir`` is None; the caller deletes it).
    """
    cur = Path(current_release_dir)
    manifest = json.loads((cur / RELEASE_MANIFEST).read_text()) if (cur / RELEASE_MANIFEST).is_file() else {}
    n = max(1, len(manifest.get("adapters", [])))
    cfg = json.loads((cur / "adapter_config.json").read_text())
    res = merge([read_factors(cur), read_factors(candidate_dir)], [n / (n + 1), 1 / (n + 1)], method=method,
                rank=int(cfg["r"]))
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="qg-trial-"))
    out.mkdir(parents=True, exist_ok=True)
    write_adapter(out, res.factors, res.rank, base_model=cfg.get("base_model_name_or_path", ""),
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
    with tempfile.TemporaryDirectory(prefix="qg-release-") as tmp:
        work = Path(tmp) / version
        work.mkdir()
        manifest = build_release(work, contribs, recipe, version=version, base_path=base_path, opts=opts, now=now)
        log(f"merged: max truncation error {manifest['merge_error']['max']:.2e}; evaluating")
        ev = Evaluator(base_path, recipe, benchmark, ood)
        metrics, names = evaluate_release(ev, work, previous_dir)
        metrics["n_adapters"] = len(contribs)
        manifest["metrics"] = _json_safe(metrics)
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


def _write_meta(d: Path, manifest: dict[str, Any]) -> None:
    (d / RELEASE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (d / RELEASE_NOTES).write_text(release_notes(manifest))


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x
