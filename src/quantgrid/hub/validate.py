"""Hub validation: untrusted zip in, accept or reject with a report out.

Stages, in order; the first failing check is the verdict, but every check that could
run is in the report:

1. **static** (``quantgrid.adapter.check_submission``, torch-free): the archive, the
   safetensors header and values, the key set and shapes, the config and the manifest.
2. **loss**: the candidate alone on the hub's base must beat the base's cross-entropy on
   the hidden benchmark by ``min_loss_improvement`` nats/token.
3. **ood**: its general-domain loss may rise by at most ``ood_tolerance`` (relative, 0.05 = 5%).
4. **duplicate**: its delta-W cosine (in factor space, ``merge.methods.delta_cosine``)
   against every accepted adapter; one at or above ``duplicate_cosine`` is a
   near-duplicate, and the candidate must beat that original's loss by ``duplicate_margin``
   (ε), so a copy, or a copy plus noise, gains nothing.
5. **trial_merge** (once a release exists): the release with the candidate merged in
   (``merge.release.trial_merge``) must not be worse than the current release beyond
   the bootstrap noise; otherwise the candidate "degrades the release".

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
    min_loss_improvement: float = 0.01
    ood_tolerance: float = 0.05
    duplicate_cosine: float = 0.95
    duplicate_margin: float = 0.02
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
    """An adapter the hub accepted earlier: its id, owner, and submission zip bytes."""

    id: int | str
    owner: str
    data: bytes


@dataclass
class Verdict:
    accepted: bool
    report: dict[str, Any]
    score: float | None = None  # loss improvement over the base, nats/token (unrounded)
    delta_info: dict[str, Any] | None = None


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


def _write_adapter(out: Path, weights: bytes, recipe: Recipe) -> Path:
    """The hub's own adapter_config.json (from the recipe) next to already-validated weights."""
    from quantgrid.ml.models import lora_config

    out.mkdir(parents=True, exist_ok=True)
    cfg = lora_config(recipe, inference=True)
    cfg.base_model_name_or_path = None
    cfg.save_pretrained(str(out))
    (out / WEIGHTS).write_bytes(weights)
    return out


def _factors(weights: bytes, recipe: Recipe):
    from safetensors.torch import load

    from quantgrid.merge.methods import factors_from_state_dict

    return factors_from_state_dict(load(weights), {"r": recipe.lora.r, "lora_alpha": recipe.lora.alpha})


# ---------------------------------------------------------------- the pipeline


def validate_submission(data: bytes, *, recipe: Recipe, base_path: str, hidden: HiddenSets,
                        accepted: Sequence[AcceptedAdapter] = (), release_dir: str | Path | None = None,
                        config: ValidationConfig | None = None,
                        progress: Callable[[str], None] | None = None) -> Verdict:
    """Run every stage on one submission's bytes and return the verdict with its report."""
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
        return _stage2(sub, static, recipe=recipe, base_path=base_path, hidden=hidden, accepted=accepted,
                       release_dir=Path(release_dir) if release_dir else None, cfg=cfg, tmp=Path(tmp), say=say)


def base_shape(base_path: str) -> BaseShape:
    """The hub base's shapes: from a local directory, else from its (cached) transformers config."""
    if (Path(base_path) / "config.json").is_file():
        return BaseShape.from_dir(base_path)
    from quantgrid.ml.models import base_info, load_config

    config = load_config(base_path)
    return BaseShape.from_config(config.to_dict(), base_info(base_path, config).name)


def _near_duplicates(sub: CheckedSubmission, accepted: Sequence[AcceptedAdapter], recipe: Recipe,
                     threshold: float) -> tuple[dict[str, float], list[tuple[AcceptedAdapter, bytes, float]], float]:
    """Cosines against every accepted adapter, the near-duplicates among them, and the candidate's norm."""
    from quantgrid.adapter import ALLOWED_DIRS, is_allowed_file
    from quantgrid.archive import read_zip
    from quantgrid.merge.methods import delta_cosine, delta_norm

    mine = _factors(sub.weights, recipe)
    cosines: dict[str, float] = {}
    near = []
    for acc in accepted:
        # Accepted blobs passed stage 1 when they arrived; read them the same safe way.
        try:
            weights = read_zip(acc.data, allowed=is_allowed_file, allowed_dirs=frozenset(ALLOWED_DIRS))[WEIGHTS]
            cos = delta_cosine(mine, _factors(weights, recipe))
        except Exception:  # noqa: BLE001 - e.g. accepted under an older recipe: not comparable, not fatal
            log.warning("accepted adapter %s could not be compared; skipped", acc.id, exc_info=True)
            continue
        cosines[str(acc.id)] = cos
        if cos >= threshold:
            near.append((acc, weights, cos))
    return cosines, near, delta_norm(mine)


def _stage2(sub: CheckedSubmission, static: Check, *, recipe: Recipe, base_path: str, hidden: HiddenSets,
            accepted: Sequence[AcceptedAdapter], release_dir: Path | None, cfg: ValidationConfig, tmp: Path,
            say: Callable[[str], None]) -> Verdict:
    from quantgrid.eval.loss import bootstrap_delta_ci, completion_losses, load_for_eval
    from quantgrid.ml.models import load_adapter

    say("near-duplicate search")
    cosines, near, norm = _near_duplicates(sub, accepted, recipe, cfg.duplicate_cosine)
    cand_dir = _write_adapter(tmp / "candidate", sub.weights, recipe)
    say("loading the base model")
    model, tokenizer, _ = load_for_eval(base_path, [], device=cfg.device, check_base=False)
    model = load_adapter(model, cand_dir, adapter_name="candidate")
    names: list[str | None] = [None, "candidate"]
    for i, (_acc, weights, _cos) in enumerate(near):
        model = load_adapter(model, _write_adapter(tmp / f"original_{i}", weights, recipe), adapter_name=f"original_{i}")
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
    lo, hi = bootstrap_delta_ci(base_l, cand_l, n=cfg.bootstrap)
    improvement = base_l.mean - cand_l.mean
    checks = [static]
    loss_numbers = {"base_loss": base_l.mean, "adapter_loss": cand_l.mean, "improvement": improvement,
                    "required_improvement": cfg.min_loss_improvement, "delta_ci95": [lo, hi],
                    "n_items": len(hidden.benchmark)}
    if improvement >= cfg.min_loss_improvement:
        checks.append(Check("loss", "proof_of_loss", True, f"lowers the hidden-benchmark loss by "
                                                          f"{improvement:.4f} nats/token", loss_numbers))
    else:
        what = "raises" if improvement < 0 else "lowers only"
        checks.append(Check("loss", "proof_of_loss", False,
                            f"{what} the hidden-benchmark loss by {abs(improvement):.4f} nats/token (base "
                            f"{base_l.mean:.4f}, adapter {cand_l.mean:.4f}); it must lower it by at least "
                            f"{cfg.min_loss_improvement}", loss_numbers,
                            hint="train longer on more finance data with the hub's recipe; `quantgrid eval` "
                                 "shows the same measurement on your own benchmark"))
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
    for i, (acc, _w, cos) in enumerate(near):
        orig = bench[f"original_{i}"]
        gain = orig.mean - cand_l.mean
        ok = gain >= cfg.duplicate_margin
        checks.append(Check("duplicate", "near_duplicate", ok,
                            f"delta-W cosine {cos:.4f} with accepted adapter {acc.id} by {acc.owner}; "
                            f"{'beats' if ok else 'does not beat'} its loss by the margin "
                            f"{cfg.duplicate_margin} (gain {gain:+.4f} nats/token)",
                            {"cosine": cos, "original": str(acc.id), "original_loss": orig.mean,
                             "adapter_loss": cand_l.mean, "gain": gain, "margin": cfg.duplicate_margin},
                            hint=None if ok else "a copy (or a copy plus noise) of an accepted adapter must "
                                                 "improve on it clearly to count as new work"))
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
    report = _report(checks, decimals=cfg.score_decimals, diagnoses=diagnoses, notes=sub.notes,
                     extra={"benchmark": {"id": hidden.benchmark_id, "n_items": len(hidden.benchmark),
                                          "n_ood": len(hidden.ood)},
                            "similarity": {"max_cosine": max(cosines.values(), default=0.0),
                                           "n_compared": len(cosines)}})
    delta_info = {"norm": norm, "cosines": {k: round(v, 6) for k, v in cosines.items()},
                  "benchmark_id": hidden.benchmark_id, "base_loss": base_l.mean, "adapter_loss": cand_l.mean}
    return Verdict(report["passed"], report, improvement, delta_info)


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


def hidden_benchmark(settings) -> tuple[list, list]:
    """(hidden benchmark, out-of-domain set) of a hub; the release engine judges with the same."""
    from quantgrid.hub.benchmark import hidden_sets

    h = hidden_sets(settings)
    return h.benchmark, h.ood
