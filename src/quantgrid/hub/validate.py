"""Hub validation: untrusted zip in, accept or reject with a report out.

Stages, in order; the first failing check is the verdict, but every check that could
run is in the report:

1. **static** (``quantgrid.adapter.check_submission``, torch-free): the archive, the
   safetensors header and values, the key set and shapes, the config and the manifest.
2. **loss** (proof of loss, a statistical test): the candidate alone on the hub's base must
   match or beat the base on the hidden benchmark: the paired bootstrap 95% interval of
   (candidate - base) loss may not lie above ``-min_loss_improvement`` (default 0, so
   "the data do not show it is worse"). An all-zero update is rejected here too: it
   matches the base trivially.
3. **ood**: its general-domain loss may rise by at most ``ood_tolerance`` (relative, 0.05 = 5%).
4. **duplicate**: the candidate's delta-W (factor space, ``merge.methods``) against
   * every accepted adapter of *other* contributors: delta-W cosine at or above
     ``duplicate_cosine`` makes it a near-duplicate, and it must beat that original's
     loss by ``duplicate_margin`` (the epsilon rule), so a copy, a rescaled copy, a copy
     plus noise or a copy trained a little further gains nothing;
   * every published release: cosine at or above ``duplicate_cosine``, or
     ``projected_cosine`` (the candidate against the release projected onto the
     candidate's own subspaces) at or above ``release_projection_cosine``, marks a
     re-pushed or projected release; it must beat that release by epsilon;
   * every earlier accepted adapter of the *same* contributor, whatever the cosine: a
     resubmission must beat each of them by epsilon on at least one topic slice of the
     hidden benchmark (with the slice's bootstrap interval above zero), so retraining on
     the same data with another seed does not farm accepted adapters.
   The default ``duplicate_cosine`` is calibrated (docs/validation.md): independently
   trained honest adapters stay far below it, every kind of copy far above.
5. **trial_merge** (once a release exists): the release with the candidate merged in
   (``merge.release.trial_merge``) must not be worse than the current release beyond
   the bootstrap noise; otherwise the candidate "degrades the release".

The accepted adapters' and releases' factors come in precomputed (``AcceptedAdapter.factors``,
``FactorCache``): the hub caches them when an adapter is accepted, so a validation never
re-reads and re-parses every accepted zip.

The base model is loaded once per validation; the candidate, the near-duplicate
originals, the release and the trial release are attached as named adapters and scored
in one pass per set (``eval.loss.completion_losses``).

What the hub writes to disk is its own: the validated weights bytes next to an
``adapter_config.json`` generated from the hub's recipe, in a temp directory, so none of
the uploaded config's loader hints can ever reach PEFT.

Report numbers are rounded to ``score_decimals``: the submitter sees them, and exact
losses would help probe the hidden benchmark.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.adapter import WEIGHTS, BaseShape, CheckedSubmission, StaticLimits, check_submission
from quantgrid.errors import ValidationError
from quantgrid.hub.benchmark import HiddenSets
from quantgrid.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class ValidationConfig:
    min_loss_improvement: float = 0.0  # extra margin on the bootstrap interval (0 = match or beat)
    ood_tolerance: float = 0.05
    duplicate_cosine: float = 0.7  # calibrated: see docs/validation.md
    duplicate_margin: float = 0.02
    release_projection_cosine: float = 0.98
    max_own_compared: int = 8  # a contributor's most similar earlier adapters scored against a resubmission
    release_tolerance: float = 0.0
    score_decimals: int = 3
    bootstrap: int = 1000
    device: str | None = None
    limits: StaticLimits = field(default_factory=StaticLimits)

    @classmethod
    def from_settings(cls, settings: Any) -> ValidationConfig:
        return cls(min_loss_improvement=settings.min_loss_improvement, ood_tolerance=settings.ood_tolerance,
                   duplicate_cosine=settings.duplicate_cosine, duplicate_margin=settings.duplicate_margin,
                   score_decimals=settings.score_decimals,
                   limits=StaticLimits(caps={"max_archive_bytes": settings.max_upload_bytes}))


@dataclass
class AcceptedAdapter:
    """An adapter the hub accepted earlier: its id, owner, and its LoRA factors.

    Pass ``factors`` precomputed (``FactorCache.factors``); ``data`` (the submission zip)
    is the slow fallback, parsed once here when no factors are given.
    """

    id: int | str
    owner: str
    data: bytes | None = None
    factors: dict | None = None

    def get_factors(self, recipe: Recipe) -> dict:
        if self.factors is None:
            from quantgrid.adapter import ALLOWED_DIRS, is_allowed_file
            from quantgrid.archive import read_zip

            files = read_zip(self.data or b"", allowed=is_allowed_file, allowed_dirs=frozenset(ALLOWED_DIRS))
            self.factors = _factors(files[WEIGHTS], recipe)
        return self.factors


@dataclass
class PublishedRelease:
    """A release of this hub: its version and PEFT adapter directory (factors read once, cached)."""

    version: str
    path: Path
    factors: dict | None = None

    def get_factors(self) -> dict:
        if self.factors is None:
            from quantgrid.merge.release import read_factors

            self.factors = read_factors(self.path)
        return self.factors


def published_releases(release_root: str | Path) -> list[PublishedRelease]:
    """Every release directory of a release store, oldest first."""
    from quantgrid.merge.release import ReleaseStore

    store = ReleaseStore(release_root)
    return [PublishedRelease(v, store.root / v) for v in store.versions()]


class FactorCache:
    """Validated LoRA weights of accepted adapters, one ``<sha256>.safetensors`` file each.

    ``put`` runs when an adapter is accepted (the weights were just validated); ``factors``
    reads the small file (memory-mapped by safetensors, no zip parsing) and keeps the
    factors in memory for the life of the process. A missing file (an adapter accepted
    before the cache existed) is rebuilt once from the submission zip.
    """

    _MEMORY: OrderedDict[tuple[str, str], dict] = OrderedDict()  # shared by every instance of one process
    MEMORY_ENTRIES = 256

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not sha256 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValidationError(f"not a sha256 hex digest: {sha256[:80]!r}", check="cache.key")
        return self.root / f"{sha256}.safetensors"

    def put(self, sha256: str, weights: bytes) -> Path:
        from quantgrid.utils import atomic_write_bytes

        self.root.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(self.path(sha256), weights)

    def factors(self, sha256: str, recipe: Recipe, load_zip: Callable[[], bytes] | None = None) -> dict:
        key = (str(self.root.resolve()), sha256)
        if key in self._MEMORY:
            self._MEMORY.move_to_end(key)
            return self._MEMORY[key]
        p = self.path(sha256)
        if p.is_file():
            weights = p.read_bytes()
        elif load_zip is not None:
            from quantgrid.adapter import ALLOWED_DIRS, is_allowed_file
            from quantgrid.archive import read_zip

            weights = read_zip(load_zip(), allowed=is_allowed_file, allowed_dirs=frozenset(ALLOWED_DIRS))[WEIGHTS]
            self.put(sha256, weights)
        else:
            raise ValidationError("cache.missing", f"no cached factors for adapter blob {sha256[:12]}")
        out = self._MEMORY[key] = _factors(weights, recipe)
        while len(self._MEMORY) > self.MEMORY_ENTRIES:
            self._MEMORY.popitem(last=False)
        return out


@dataclass
class Verdict:
    accepted: bool
    report: dict[str, Any]
    score: float | None = None  # loss improvement over the base, nats/token (unrounded)
    delta_info: dict[str, Any] | None = None
    weights: bytes | None = None  # the validated safetensors bytes (for FactorCache.put on acceptance)


@dataclass
class Check:
    stage: str
    check: str
    passed: bool
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None


def _round(x: Any, decimals: int) -> Any:
    if isinstance(x, float):
        return round(x, decimals) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v, decimals) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, decimals) for v in x]
    return x


def _report(checks: list[Check], *, decimals: int, diagnoses: list[str] = (), notes: list[str] = (),
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    failed = next((c for c in checks if not c.passed), None)
    head = failed or Check("accepted", "all", True, "passed every check: " + ", ".join(c.check for c in checks))
    return {
        "stage": head.stage, "check": head.check, "passed": failed is None, "message": head.message,
        "hint": head.hint, "numbers": _round(head.numbers, decimals), "diagnoses": list(diagnoses),
        "notes": list(notes),
        "checks": [{"stage": c.stage, "check": c.check, "passed": c.passed, "message": c.message,
                    "numbers": _round(c.numbers, decimals)} for c in checks],
        **_round(extra or {}, decimals),
    }


# ---------------------------------------------------------------- files the hub writes itself


def _write_adapter(out: Path, weights: bytes | dict, recipe: Recipe) -> Path:
    """The hub's own adapter_config.json (from the recipe) next to validated weights: the
    submission's bytes (stage 1 checked every name and shape) or factors read from them."""
    from quantgrid.lora_files import write_adapter
    from quantgrid.ml.models import lora_config

    cfg = lora_config(recipe, inference=True)
    cfg.base_model_name_or_path = None
    return write_adapter(out, weights, cfg)


def _factors(weights: bytes, recipe: Recipe):
    """Factors of validated weights, scaled by the hub's recipe (never the submitter's config)."""
    from quantgrid.lora_files import read_weights

    return read_weights(weights, {"r": recipe.lora.r, "lora_alpha": recipe.lora.alpha})


# ---------------------------------------------------------------- the pipeline


def validate_submission(data: bytes, *, recipe: Recipe, base_path: str, hidden: HiddenSets,
                        accepted: Sequence[AcceptedAdapter] = (), release_dir: str | Path | None = None,
                        releases: Sequence[PublishedRelease] = (), contributor: str | None = None,
                        config: ValidationConfig | None = None,
                        progress: Callable[[str], None] | None = None) -> Verdict:
    """Run every stage on one submission's bytes and return the verdict with its report.

    ``accepted``: the hub's accepted adapters (with precomputed factors); ``releases``: its
    published releases; ``contributor``: who submits (their own earlier adapters are held to
    the resubmission rule); ``release_dir``: the release in service, for the trial merge.
    """
    cfg = config or ValidationConfig()
    say = progress or (lambda _msg: None)
    say("static checks")
    base = base_shape(base_path)
    try:
        sub = check_submission(data, recipe, base, cfg.limits)
    except ValidationError as e:
        check = Check("static", e.check, False, e.message, hint=e.hint)
        return Verdict(False, _report([check], decimals=cfg.score_decimals))
    static = Check("static", "static", True, f"archive, weights, config and manifest match the hub's recipe "
                                             f"(r={recipe.lora.r}, {len(sub.tensor_norms)} tensors)")
    with tempfile.TemporaryDirectory(prefix="qg-validate-") as tmp:
        verdict = _stage2(sub, static, recipe=recipe, base_path=base_path, hidden=hidden, accepted=accepted,
                          releases=releases, contributor=contributor,
                          release_dir=Path(release_dir) if release_dir else None, cfg=cfg, tmp=Path(tmp), say=say)
    verdict.weights = sub.weights
    return verdict


def base_shape(base_path: str) -> BaseShape:
    """The hub base's shapes: from a local directory, else from its (cached) transformers config."""
    if (Path(base_path) / "config.json").is_file():
        return BaseShape.from_dir(base_path)
    from quantgrid.ml.models import base_info, load_config

    config = load_config(base_path)
    return BaseShape.from_config(config.to_dict(), base_info(base_path, config).name)


@dataclass
class _Original:
    """Something the candidate is scored against in the duplicate stage."""

    kind: str  # "adapter" (another contributor's), "own" (the contributor's earlier one), "release"
    label: str  # "accepted adapter 12 by alice", "release 2026.47", ...
    ref: str  # adapter id or release version
    cosine: float
    projected: float | None
    adapter_dir: Path | None = None
    factors: dict | None = None


def _similarities(mine: dict, accepted: Sequence[AcceptedAdapter], releases: Sequence[PublishedRelease],
                  contributor: str | None, recipe: Recipe, cfg: ValidationConfig) -> tuple[dict[str, float], list]:
    """Cosines against every accepted adapter and release, and the originals to score against."""
    from quantgrid.merge.methods import delta_cosine, projected_cosine

    cosines: dict[str, float] = {}
    near: list[_Original] = []
    own: list[_Original] = []
    for acc in accepted:
        try:
            theirs = acc.get_factors(recipe)
            cos = delta_cosine(mine, theirs)
        except Exception:  # noqa: BLE001 - e.g. accepted under an older recipe: not comparable, not fatal
            log.warning("accepted adapter %s could not be compared; skipped", acc.id, exc_info=True)
            continue
        cosines[str(acc.id)] = cos
        if contributor is not None and acc.owner == contributor:
            own.append(_Original("own", f"your earlier adapter {acc.id}", str(acc.id), cos, None, factors=theirs))
        elif cos >= cfg.duplicate_cosine:
            near.append(_Original("adapter", f"accepted adapter {acc.id} by {acc.owner}", str(acc.id), cos, None,
                                  factors=theirs))
    for rel in releases:
        try:
            theirs = rel.get_factors()
            cos, proj = delta_cosine(mine, theirs), projected_cosine(mine, theirs)
        except Exception:  # noqa: BLE001 - a release of an older recipe: not comparable
            log.warning("release %s could not be compared; skipped", rel.version, exc_info=True)
            continue
        cosines[f"release:{rel.version}"] = cos
        if cos >= cfg.duplicate_cosine or proj >= cfg.release_projection_cosine:
            near.append(_Original("release", f"release {rel.version}", rel.version, cos, proj,
                                  adapter_dir=rel.path))
    # The contributor's most similar earlier adapters (bounded: each is one more scored variant).
    own.sort(key=lambda o: -o.cosine)
    return cosines, near + own[:cfg.max_own_compared]


def _slice_gains(orig, cand, examples, seed: int = 0) -> list[dict[str, Any]]:
    """Per topic slice of the hidden benchmark: loss of ``orig`` minus ``cand`` with its 95% interval."""
    from quantgrid.eval.loss import LossResult, bootstrap_delta_ci
    from quantgrid.merge.release import topic_slices

    out = []
    for topic, idx in sorted(topic_slices(examples).items()):
        o = LossResult(orig.name, [orig.nll[i] for i in idx], [orig.n_tokens[i] for i in idx])
        c = LossResult(cand.name, [cand.nll[i] for i in idx], [cand.n_tokens[i] for i in idx])
        lo, hi = bootstrap_delta_ci(c, o, seed=seed)  # o - c: positive = the candidate is better
        out.append({"topic": topic, "gain": o.mean - c.mean, "ci95": [lo, hi], "n_items": len(idx)})
    return out


def _stage2(sub: CheckedSubmission, static: Check, *, recipe: Recipe, base_path: str, hidden: HiddenSets,
            accepted: Sequence[AcceptedAdapter], releases: Sequence[PublishedRelease], contributor: str | None,
            release_dir: Path | None, cfg: ValidationConfig, tmp: Path, say: Callable[[str], None]) -> Verdict:
    from quantgrid.eval.loss import bootstrap_delta_ci, completion_losses, load_for_eval
    from quantgrid.merge.methods import delta_norm
    from quantgrid.ml.models import load_adapter

    say("near-duplicate search")
    mine = _factors(sub.weights, recipe)
    norm = delta_norm(mine)
    cosines, originals = _similarities(mine, accepted, releases, contributor, recipe, cfg)
    cand_dir = _write_adapter(tmp / "candidate", sub.weights, recipe)
    say("loading the base model")
    model, tokenizer, _ = load_for_eval(base_path, [], device=cfg.device, check_base=False)
    model = load_adapter(model, cand_dir, adapter_name="candidate")
    names: list[str | None] = [None, "candidate"]
    for i, o in enumerate(originals):
        if o.adapter_dir is None:
            o.adapter_dir = _write_adapter(tmp / f"original_{i}", o.factors, recipe)
        model = load_adapter(model, o.adapter_dir, adapter_name=f"original_{i}")
        names.append(f"original_{i}")
    if release_dir is not None:
        from quantgrid.merge.release import trial_merge

        say("trial merge into the current release")
        trial_dir = trial_merge(release_dir, cand_dir, tmp / "trial")
        model = load_adapter(model, release_dir, adapter_name="release")
        model = load_adapter(model, trial_dir, adapter_name="trial")
        names += ["release", "trial"]

    def score(examples, variants):
        return completion_losses(model, tokenizer, examples, template=recipe.prompt_template,
                                 system_prompt=recipe.system_prompt, max_length=recipe.training.max_seq_length,
                                 adapters=variants)

    say(f"scoring {len(names)} variants on {len(hidden.benchmark)} hidden items")
    bench = score(hidden.benchmark, names)
    say(f"scoring the base and the candidate on {len(hidden.ood)} out-of-domain items")
    ood = score(hidden.ood, [None, "candidate"]) if hidden.ood else None
    base_l, cand_l = bench[None], bench["candidate"]
    lo, hi = bootstrap_delta_ci(base_l, cand_l, n=cfg.bootstrap)  # of (candidate - base)
    improvement = base_l.mean - cand_l.mean
    checks = [static, _loss_check(base_l.mean, cand_l.mean, lo, hi, norm, len(hidden.benchmark), cfg)]
    loss_numbers = checks[-1].numbers
    ood_numbers: dict[str, Any] = {}
    if ood is not None:
        # Relative, like `quantgrid eval --ood-threshold`: the same setting means the same
        # thing for a tiny base at 6 nats/token and a 7B model at 1.5.
        rise = ood["candidate"].mean - ood[None].mean
        relative = rise / ood[None].mean
        ood_numbers = {"base_loss": ood[None].mean, "adapter_loss": ood["candidate"].mean, "rise": rise,
                       "relative_rise": relative, "tolerance": cfg.ood_tolerance, "n_items": len(hidden.ood)}
        ok = relative <= cfg.ood_tolerance
        checks.append(Check("ood", "out_of_domain", ok,
                            f"general-domain loss {'rises' if rise > 0 else 'changes'} by {rise:+.4f} nats/token "
                            f"({relative:+.1%}; allowed +{cfg.ood_tolerance:.1%})", ood_numbers,
                            hint=None if ok else "the adapter forgets general knowledge: fewer epochs, a lower "
                                                 "learning rate, or mix general data into training"))
    for i, o in enumerate(originals):
        checks.append(_duplicate_check(o, bench[f"original_{i}"], cand_l, hidden, cfg))
    trial_numbers: dict[str, Any] = {}
    if release_dir is not None:
        from quantgrid.merge.release import degrades_release

        d = degrades_release(bench["release"], bench["trial"], tolerance=cfg.release_tolerance)
        trial_numbers = {"release_loss": d["previous"], "trial_loss": d["new"], "delta": d["delta"],
                         "delta_ci95": d["ci95"], "release": release_dir.name}
        checks.append(Check("trial_merge", "degrades_release", not d["degrades"],
                            ("degrades the release" if d["degrades"] else "does not degrade the release")
                            + f": merged into {release_dir.name} the loss goes {d['previous']:.4f} -> "
                              f"{d['new']:.4f} nats/token", trial_numbers,
                            hint=None if not d["degrades"] else "the adapter conflicts with what the release "
                                                                "already knows; an adapter that degrades overall "
                                                                "performance is rejected"))
    diagnoses = _diagnoses(sub, hidden, bench, ood, loss_numbers, ood_numbers, cfg, norm)
    adapter_cos = [v for k, v in cosines.items() if not k.startswith("release:")]
    report = _report(checks, decimals=cfg.score_decimals, diagnoses=diagnoses, notes=sub.notes,
                     extra={"benchmark": {"id": hidden.benchmark_id, "n_items": len(hidden.benchmark),
                                          "n_ood": len(hidden.ood)},
                            "similarity": {"max_cosine": max(adapter_cos, default=0.0),
                                           "n_compared": len(adapter_cos),
                                           "max_release_cosine": max((v for k, v in cosines.items()
                                                                      if k.startswith("release:")), default=0.0),
                                           "n_releases_compared": len(cosines) - len(adapter_cos),
                                           "threshold": cfg.duplicate_cosine}})
    delta_info = {"norm": norm, "cosines": {k: round(v, 6) for k, v in cosines.items()},
                  "benchmark_id": hidden.benchmark_id, "base_loss": base_l.mean, "adapter_loss": cand_l.mean}
    return Verdict(report["passed"], report, improvement, delta_info)


def _loss_check(base: float, cand: float, lo: float, hi: float, norm: float, n_items: int,
                cfg: ValidationConfig) -> Check:
    """Proof of loss: the 95% interval of (candidate - base) must not lie above -margin."""
    margin = cfg.min_loss_improvement
    numbers = {"base_loss": base, "adapter_loss": cand, "improvement": base - cand, "delta": cand - base,
               "delta_ci95": [lo, hi], "required_improvement": margin, "n_items": n_items}
    interval = f"95% interval of (adapter - base) [{lo:+.4f}, {hi:+.4f}] nats/token"
    if norm == 0.0:
        return Check("loss", "proof_of_loss", False, "the adapter's update is zero: it changes nothing",
                     numbers, hint="train the adapter (lora_B is all zeros, as PEFT initializes it)")
    bar = "0" if margin == 0 else f"-{margin}"
    if math.isfinite(lo) and lo <= -margin:
        verb = "beats" if hi < 0 else "matches"
        return Check("loss", "proof_of_loss", True,
                     f"{verb} the base on the hidden benchmark: loss {base:.4f} -> {cand:.4f}, {interval}, "
                     f"which reaches {bar} or below", numbers)
    worse = cand > base
    what = "raises the hidden-benchmark loss" if worse else "does not lower the hidden-benchmark loss enough"
    return Check("loss", "proof_of_loss", False,
                 f"{what}: base {base:.4f}, adapter {cand:.4f} nats/token; the {interval} lies entirely above "
                 f"{bar}" + ("" if margin == 0 else f" (the hub asks for an improvement of {margin})"), numbers,
                 hint="train longer on more finance data with the hub's recipe; `quantgrid eval` shows the same "
                      "measurement on your own benchmark")


def _duplicate_check(o: _Original, orig, cand, hidden: HiddenSets, cfg: ValidationConfig) -> Check:
    eps = cfg.duplicate_margin
    gain = orig.mean - cand.mean
    numbers: dict[str, Any] = {"cosine": o.cosine, "original": o.ref, "original_kind": o.kind,
                               "original_loss": orig.mean, "adapter_loss": cand.mean, "gain": gain, "margin": eps}
    if o.projected is not None:
        numbers["projected_cosine"] = o.projected
    if o.kind == "own":
        slices = _slice_gains(orig, cand, hidden.benchmark)
        best = max(slices, key=lambda x: x["gain"], default={"topic": None, "gain": 0.0, "ci95": [0.0, 0.0]})
        ok = best["gain"] >= eps and best["ci95"][0] > 0
        numbers.update(best_slice=best["topic"], best_slice_gain=best["gain"], best_slice_ci95=best["ci95"])
        return Check("duplicate", "own_resubmission", ok,
                     f"compared with {o.label} (delta-W cosine {o.cosine:.4f}): "
                     + (f"beats it on topic {best['topic']!r} by {best['gain']:+.4f} nats/token"
                        if ok else f"beats it on no topic slice by the margin {eps} (best: {best['topic']!r}, "
                                   f"{best['gain']:+.4f}, 95% interval [{best['ci95'][0]:+.4f}, "
                                   f"{best['ci95'][1]:+.4f}])"), numbers,
                     hint=None if ok else "a new adapter of yours counts when it adds something your earlier ones "
                                          "lack: train on another topic or better data, not the same data again")
    ok = gain >= eps
    what = ("is a re-pushed or projected release" if o.kind == "release" else "is a near-duplicate")
    sim = f"delta-W cosine {o.cosine:.4f}" + (f", projected cosine {o.projected:.4f}" if o.projected is not None else "")
    return Check("duplicate", "release_copy" if o.kind == "release" else "near_duplicate", ok,
                 f"{sim} with {o.label} (threshold {cfg.duplicate_cosine}); "
                 + (f"{what} but beats its loss by {gain:+.4f} nats/token (margin {eps})" if ok else
                    f"{what}: it does not beat its loss by the margin {eps} (gain {gain:+.4f} nats/token)"),
                 numbers,
                 hint=None if ok else ("the published release is everyone's; pushing it (or a projection of it) "
                                       "back is not a contribution" if o.kind == "release" else
                                       "a copy (or a rescaled, noisy or briefly retrained copy) of an accepted "
                                       "adapter must improve on it clearly to count as new work"))


def _diagnoses(sub: CheckedSubmission, hidden: HiddenSets, bench, ood, loss: dict, ood_numbers: dict,
               cfg: ValidationConfig, norm: float) -> list[str]:
    """The eval harness's diagnoses of these losses, plus the hub's own findings."""
    out: list[str] = []
    try:
        out += _harness_diagnoses(sub, hidden, bench, ood, loss, ood_numbers, cfg)
    except Exception:  # noqa: BLE001 - diagnoses explain a verdict; they must never block one
        log.exception("eval harness diagnoses failed")
    if loss["improvement"] < -0.5:
        out.append(f"the benchmark loss rose by {-loss['improvement']:.3f} nats/token: the update (norm "
                   f"{norm:.3g}) points away from finance Q&A: random or unrelated-domain weights, or a "
                   "different prompt template than the recipe's")
    return list(dict.fromkeys(out))


def _harness_diagnoses(sub, hidden, bench, ood, loss, ood_numbers, cfg) -> list[str]:
    from quantgrid.eval.harness import loss_results
    from quantgrid.eval.report import diagnose
    from quantgrid.eval.results import TrainingSummary

    results = loss_results(bench[None], bench["candidate"], benchmark=f"hub:{hidden.benchmark_id}",
                           base_model=sub.manifest.base_model.name, delta_ci=loss["delta_ci95"],
                           ood=(ood[None], ood["candidate"]) if ood is not None else None,
                           ood_threshold=cfg.ood_tolerance)
    fp = sub.manifest.dataset.fingerprint or {}
    training = TrainingSummary(n_examples=fp.get("n_examples"), non_standard=sub.manifest.non_standard)
    return diagnose(results, training, eval_loss=bench["candidate"].mean)


# ---------------------------------------------------------------- the hub's worker


def factor_cache(settings) -> FactorCache:
    """The hub's cache of accepted adapters' factors (``<storage_dir>/factors``)."""
    return FactorCache(settings.storage_dir / "factors")


def references(settings, rows: Sequence[tuple[int, str, str]], read_blob: Callable[[str], bytes],
               cache: FactorCache | None = None) -> tuple[list[AcceptedAdapter], list[PublishedRelease]]:
    """What a candidate is compared with: every accepted adapter ``(id, blob sha256, owner)``
    with its cached factors, and every published release of the hub."""
    from quantgrid.hub.server.releases import release_root

    cache = cache or factor_cache(settings)
    accepted = [AcceptedAdapter(aid, owner, factors=cache.factors(sha, settings.recipe, lambda sha=sha: read_blob(sha)))
                for aid, sha, owner in rows]
    return accepted, published_releases(release_root(settings))


def hidden_benchmark(settings) -> tuple[list, list]:
    """(hidden benchmark, out-of-domain set) of a hub; the release engine judges with the same."""
    from quantgrid.hub.benchmark import hidden_sets

    h = hidden_sets(settings)
    return h.benchmark, h.ood
