"""The validation pipeline on the tiny base: static reports, proof of loss, duplicates, trial merge.

Adapters here are random tensors of the right shapes (no training): a large random update
is a "noise adapter" that must fail proof of loss; with the loss bars lowered, small random
updates exercise the duplicate and trial-merge logic on their own.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from malicious import generator as g

from quantgrid.adapter import BaseShape, expected_lora_shapes
from quantgrid.hub.benchmark import build_hidden_sets
from quantgrid.hub.validate import AcceptedAdapter, ValidationConfig, validate_submission
from quantgrid.recipe import Recipe

LOOSE = dict(min_loss_improvement=-1e9, ood_tolerance=1e9)


@pytest.fixture(scope="module")
def hub(tiny_base):
    recipe = Recipe(base_model=tiny_base)
    base = BaseShape.from_dir(tiny_base)
    hidden = build_hidden_sets("unit-test-secret", size=24, ood_size=12)
    return recipe, base, hidden


def tensors(hub, seed: int, scale: float) -> dict[str, np.ndarray]:
    recipe, base, _ = hub
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32)
            for k, s in expected_lora_shapes(recipe, base).items()}


def submit(hub, t, **cfg):
    recipe, base, hidden = hub
    data = g.submission_for(t, recipe, base)
    return data, lambda **kw: validate_submission(data, recipe=recipe, base_path=recipe.base_model, hidden=hidden,
                                                  config=ValidationConfig(**cfg), **kw)


def _all_floats(x):
    if isinstance(x, float):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _all_floats(v)
    elif isinstance(x, list):
        for v in x:
            yield from _all_floats(v)


def test_static_rejection_is_reported_without_loading_a_model(hub):
    recipe, _base, hidden = hub
    v = validate_submission(g.KINDS["zip_slip_dotdot"][0]("x"), recipe=recipe, base_path=recipe.base_model,
                            hidden=hidden)
    assert not v.accepted and v.score is None
    assert v.report["stage"] == "static" and v.report["check"] == "archive.unsafe_path"
    assert ".." in v.report["message"]
    json.dumps(v.report)  # storable as-is


def test_random_noise_adapter_fails_proof_of_loss(hub):
    _, run = submit(hub, tensors(hub, 1, 0.3))
    v = run()
    r = v.report
    assert not v.accepted
    assert (r["stage"], r["check"]) == ("loss", "proof_of_loss")
    assert r["numbers"]["improvement"] < 0 and "raises the hidden-benchmark loss" in r["message"]
    assert r["numbers"]["adapter_loss"] > r["numbers"]["base_loss"]
    assert any("does not lower the loss" in d for d in r["diagnoses"])  # the eval harness's diagnosis
    assert r["benchmark"]["n_items"] == 24 and "unit-test-secret" not in json.dumps(r)
    # published numbers are rounded (the report goes back to the submitter)
    assert all(round(x, 3) == x for x in _all_floats(r))


def test_copy_and_copy_plus_noise_are_duplicates_but_new_work_is_not(hub):
    original = tensors(hub, 7, 0.05)
    orig_data, _ = submit(hub, original)
    accepted = [AcceptedAdapter(11, "alice", orig_data)]

    _, run = submit(hub, {k: v.copy() for k, v in original.items()}, **LOOSE)
    v = run(accepted=accepted)
    assert not v.accepted and (v.report["stage"], v.report["check"]) == ("duplicate", "near_duplicate")
    assert v.report["numbers"]["cosine"] == pytest.approx(1.0, abs=1e-3)
    assert "alice" in v.report["message"] and v.report["numbers"]["gain"] < 0.02

    rng = np.random.default_rng(0)
    noisy = {k: v + rng.standard_normal(v.shape).astype(np.float32) * 0.002 for k, v in original.items()}
    _, run = submit(hub, noisy, **LOOSE)
    v = run(accepted=accepted)
    assert not v.accepted and v.report["check"] == "near_duplicate"
    assert 0.95 <= v.report["numbers"]["cosine"] < 1.0

    _, run = submit(hub, tensors(hub, 8, 0.05), **LOOSE)
    v = run(accepted=accepted)
    assert v.accepted, v.report
    assert v.report["similarity"]["n_compared"] == 1 and abs(v.delta_info["cosines"]["11"]) < 0.5
    assert not any(c["check"] == "near_duplicate" for c in v.report["checks"])
    assert math.isfinite(v.score)


def _release_dir(hub, tmp_path, t):
    """A release directory (G's format) holding one adapter's update."""
    import torch

    from quantgrid.merge.methods import LoraFactors, merge
    from quantgrid.merge.release import write_adapter

    recipe = hub[0]
    factors = {}
    for k, v in t.items():
        module, side = k.rsplit(".lora_", 1)
        factors.setdefault(module, {})[side[0]] = torch.from_numpy(v)
    fs = {m: LoraFactors(ab["A"], ab["B"], recipe.lora.scaling) for m, ab in factors.items()}
    res = merge([fs], [1.0], rank=recipe.lora.r)
    out = tmp_path / "2026.47"
    out.mkdir()
    write_adapter(out, res.factors, res.rank, base_model=recipe.base_model, target_modules=recipe.lora.target_modules)
    (out / "release.json").write_text(json.dumps({"version": "2026.47", "adapters": [{"id": "1"}]}))
    return out


def test_trial_merge_rejects_a_candidate_that_degrades_the_release(hub, tmp_path):
    release = _release_dir(hub, tmp_path, tensors(hub, 3, 0.02))
    _, run = submit(hub, tensors(hub, 4, 0.3), **LOOSE)
    v = run(release_dir=release)
    assert not v.accepted
    assert (v.report["stage"], v.report["check"]) == ("trial_merge", "degrades_release")
    assert "degrades the release" in v.report["message"]
    n = v.report["numbers"]
    assert n["trial_loss"] > n["release_loss"] and n["delta_ci95"][0] > 0

    # A candidate pointing the release's own way: the trial release is the release again.
    _, run = submit(hub, tensors(hub, 3, 0.02), **LOOSE)
    v = run(release_dir=release)
    trial = next(c for c in v.report["checks"] if c["check"] == "degrades_release")
    assert trial["passed"] and v.accepted, v.report
    assert abs(trial["numbers"]["delta"]) <= 0.001


def test_proof_of_loss_is_a_bootstrap_test_with_an_optional_margin(hub):
    """"Match or beat": the 95% interval of (adapter - base) may not lie above -margin."""
    tiny = tensors(hub, 21, 0.002)  # a barely-there update: the same loss as the base, within noise
    _, run = submit(hub, tiny)
    v = run()
    loss = next(c for c in v.report["checks"] if c["check"] == "proof_of_loss")
    lo, hi = loss["numbers"]["delta_ci95"]
    assert lo <= 0 <= hi + 1e-3 and loss["passed"], loss  # matches the base: accepted at the default
    assert "95% interval" in loss["message"] and loss["numbers"]["required_improvement"] == 0
    _, run = submit(hub, tiny, min_loss_improvement=0.5)  # the operator's extra margin
    v = run()
    assert not v.accepted and v.report["check"] == "proof_of_loss"
    assert "lies entirely above -0.5" in v.report["message"]
    # An all-zero update matches the base trivially: rejected.
    zero = {k: np.zeros_like(x) for k, x in tiny.items()}
    _, run = submit(hub, zero)
    v = run()
    assert not v.accepted and "update is zero" in v.report["message"]


def test_release_copies_and_own_resubmissions_are_rejected(hub, tmp_path):
    """A pushed-back release, and a contributor's own earlier adapter again, gain nothing."""
    from quantgrid.hub.validate import PublishedRelease

    t = tensors(hub, 3, 0.02)
    release = _release_dir(hub, tmp_path, t)
    _, run = submit(hub, {k: x.copy() for k, x in t.items()}, **LOOSE)
    v = run(releases=[PublishedRelease("2026.47", release)])
    assert not v.accepted and (v.report["stage"], v.report["check"]) == ("duplicate", "release_copy"), v.report
    assert v.report["numbers"]["original"] == "2026.47" and "release 2026.47" in v.report["message"]
    assert v.report["similarity"]["n_releases_compared"] == 1

    mine = tensors(hub, 9, 0.05)
    data, _ = submit(hub, mine)
    earlier = [AcceptedAdapter(5, "dana", data)]
    rng = np.random.default_rng(2)
    again = {k: x + rng.standard_normal(x.shape).astype(np.float32) * 0.05 for k, x in mine.items()}
    _, run = submit(hub, again, **LOOSE)
    v = run(accepted=earlier, contributor="dana")  # the same owner: judged as a resubmission
    assert not v.accepted and v.report["check"] == "own_resubmission", v.report
    assert v.report["numbers"]["original"] == "5" and "your earlier adapter 5" in v.report["message"]
    v = run(accepted=earlier, contributor="erin")  # someone else: below the cosine threshold, new work
    assert v.accepted, v.report
