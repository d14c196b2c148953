"""The release engine end to end on the tiny base, with adapters trained through PEFT:
build -> evaluate -> gate -> leave-one-out -> atomic publish; cumulative; trial merge."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import torch
from release_helpers import hidden, release_recipe, train_adapters

from quantgrid.merge import release as R
from quantgrid.merge.methods import merge, relative_error

NOW = dt.datetime(2026, 11, 22, 3, 0, tzinfo=dt.timezone.utc)  # Sunday of ISO week 47
RELEASE_FILES = {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json", "release.json",
                 "RELEASE_NOTES.md", "README.md", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"}
EQUAL = R.BuildOptions(weighting="equal", rank=4)  # the plain mean at the recipe's rank


@pytest.fixture(scope="module")
def world(tiny_base, tmp_path_factory):
    """Three helpful adapters from two contributors, and one harmful adapter."""
    root = tmp_path_factory.mktemp("adapters")
    recipe = release_recipe(tiny_base)
    dirs = train_adapters(tiny_base, recipe, root, {"a1": (1, 1.0), "a2": (2, 1.0), "b1": (3, 1.0), "bad": (4, -25.0)})
    who = {"a1": "alice", "a2": "alice", "b1": "bob", "bad": "mallory"}
    contribs = {n: R.Contribution(id=n, contributor=who[n], factors=R.read_factors(d)) for n, d in dirs.items()}
    bench, ood = hidden()
    return {"base": tiny_base, "recipe": recipe, "dirs": dirs, "c": contribs, "bench": bench, "ood": ood}


def _run(world, store, names, **kw):
    # Out of domain, the random-init tiny base moves a lot with any finance training; the
    # OOD gate itself is tested at the hub default in test_out_of_domain_gate.
    kw.setdefault("ood_tolerance", 1.0)
    kw.setdefault("opts", EQUAL)
    return R.run_release([world["c"][n] for n in names], store, recipe=world["recipe"], base_path=world["base"],
                         benchmark=world["bench"], ood=world["ood"], **kw)


def test_first_release_is_a_plain_peft_adapter_with_manifest_and_notes(world, tmp_path):
    store = R.ReleaseStore(tmp_path / "releases")
    out = _run(world, store, ["a1", "b1"], now=NOW)
    assert out.published and out.version == "2026.47" and store.current() == "2026.47"
    d = store.path("2026.47")
    assert {p.name for p in d.iterdir()} == RELEASE_FILES  # and no temp leftovers anywhere
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []
    m = json.loads((d / "release.json").read_text())
    assert [a["id"] for a in m["adapters"]] == ["a1", "b1"]
    assert [a["weight"] for a in m["adapters"]] == pytest.approx([0.5, 0.5])
    assert all(0 <= a["merge_error"] < 1 for a in m["adapters"])
    assert m["metrics"]["against"] == "the base model"
    assert m["metrics"]["improvement_over_base"] > 0  # helpful adapters make a helpful release
    assert m["gate"]["passed"]
    # leave-one-out per contributor (its definition is checked in test_leave_one_out_impact...)
    assert set(m["impact"]) == {"alice", "bob"} and all(abs(v) < 5 for v in m["impact"].values())
    notes = (d / "RELEASE_NOTES.md").read_text()
    assert notes.startswith("# quantgrid release 2026.47") and "| a1 | alice | 0.5000 |" in notes
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 4 and cfg["target_modules"] == ["q_proj", "v_proj"]

    # PEFT loads it, and its delta-W is the rank-4 merge of the inputs
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world["base"]), str(d))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = merge([world["c"]["a1"].factors, world["c"]["b1"].factors], rank=4).factors
    key = next(k for k in expected if k.endswith("layers.0.self_attn.q_proj"))
    got = layer.get_delta_weight("default")
    assert torch.allclose(got, expected[key].delta(), atol=1e-5)


def test_default_release_fits_weights_adapts_its_rank_and_records_its_quality(world, tmp_path):
    """The default build: weights fitted on half the hidden benchmark, rank by energy, and the
    release measured against the base and each adapter alone on the other half."""
    store = R.ReleaseStore(tmp_path / "releases")
    contribs = [world["c"][n] for n in ("a1", "a2", "b1")]
    out = R.run_release(contribs, store, recipe=world["recipe"], base_path=world["base"], benchmark=world["bench"],
                        ood=world["ood"], now=NOW, ood_tolerance=1.0, loo=False)
    m = out.manifest
    assert m["weighting"] == "fit" and all(a["weight"] >= 0 for a in m["adapters"])
    assert 1 <= m["rank"] <= 12  # 3 adapters of rank 4: exact at 12, cut to 99% of the energy
    q = m["quality"]
    fit_n, held_n = q["fit"]["n_items"], q["n_items"]
    assert fit_n + held_n == len(world["bench"]) and abs(fit_n - held_n) <= len(q["slices"])
    assert q["fit"]["end"] <= q["fit"]["start"]  # the search never ends worse than equal weights
    assert set(q["overall"]["adapters"]) == {"a1", "a2", "b1"}
    assert q["best_single"]["loss"] == min(q["overall"]["adapters"].values())
    assert q["beats_best_single"] == (q["overall"]["release"] < q["best_single"]["loss"])
    for r in q["retention"].values():  # retention is (base - release) / (base - adapter) on the own slice
        row = q["slices"][r["own_slice"]]
        assert r["release_gain"] == pytest.approx(row["base"] - row["release"])
    notes = (store.path(out.version) / "RELEASE_NOTES.md").read_text()
    assert "## Release against each adapter alone" in notes and "| **overall** |" in notes
    # The weights file is exactly the merge the manifest describes.
    opts = R.BuildOptions(weights={a["id"]: a["weight"] for a in m["adapters"]})
    res, _ = R.merge_contributions(contribs, world["recipe"], opts)
    assert res.rank == m["rank"] and relative_error(R.read_factors(store.path(out.version)), res.factors) < 1e-5


def test_releases_are_cumulative_versioned_and_gated(world, tmp_path):
    store = R.ReleaseStore(tmp_path / "releases")
    first = _run(world, store, ["a1"], now=NOW, loo=False)
    second = _run(world, store, ["a1", "a2", "b1"], now=NOW + dt.timedelta(hours=5), loo=False)
    assert (first.version, second.version) == ("2026.47", "2026.47.2")
    assert second.published and second.manifest["previous"] == "2026.47"
    assert second.manifest["metrics"]["against"] == "the previous release"
    next_week = _run(world, store, ["a1", "a2", "b1"], now=NOW + dt.timedelta(days=1), loo=False)
    assert next_week.version == "2026.48"

    # a harmful adapter makes the merged release worse: the gate keeps the previous one
    worse = _run(world, store, ["a1", "a2", "b1", "bad"], now=NOW + dt.timedelta(days=2))
    assert not worse.published and "worse than the previous release" in worse.reason
    assert store.current() == "2026.48" and store.versions() == ["2026.47", "2026.47.2", "2026.48"]


def test_out_of_domain_gate(world, tmp_path):
    store = R.ReleaseStore(tmp_path / "releases")
    out = _run(world, store, ["a1", "b1"], now=NOW, loo=False, ood_tolerance=0.001)
    ood = out.manifest["metrics"]["ood"]
    assert ood["delta"] / ood["previous"] > 0.001  # relative rise above the 0.1% allowed
    assert not out.published and "out-of-domain loss rose" in out.reason and "allowed +0.1%" in out.reason
    assert store.versions() == []


def test_dry_run_publishes_nothing(world, tmp_path):
    store = R.ReleaseStore(tmp_path / "releases")
    out = _run(world, store, ["a1"], now=NOW, dry_run=True, loo=False)
    assert out.dry_run and not out.published and out.manifest["gate"]["passed"]
    assert store.versions() == [] and store.current() is None


def test_a_crash_while_publishing_keeps_the_previous_release(world, tmp_path, monkeypatch):
    store = R.ReleaseStore(tmp_path / "releases")
    _run(world, store, ["a1"], now=NOW, loo=False)

    def boom(*_a, **_k):
        raise RuntimeError("power cut during the database commit")

    with pytest.raises(RuntimeError):
        _run(world, store, ["a1", "b1"], now=NOW, loo=False, commit=boom)
    assert store.current() == "2026.47"

    # a crash while writing the weights leaves no directory at all
    monkeypatch.setattr(R, "write_adapter", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        _run(world, store, ["a1", "b1"], now=NOW, loo=False)
    monkeypatch.undo()
    assert store.current() == "2026.47"
    assert not [p for p in store.root.iterdir() if p.name.endswith(".partial")]
    # the next run reuses the name the crashed one never made current
    again = _run(world, store, ["a1", "b1"], now=NOW, loo=False, existing_versions=["2026.47"])
    assert again.published and again.version == "2026.47.2" and store.current() == "2026.47.2"


def test_store_rejects_bad_versions_and_unknown_rollbacks(tmp_path):
    from quantgrid.errors import ConfigError, NotFound

    store = R.ReleaseStore(tmp_path / "r")
    with pytest.raises(ConfigError):
        store.path("../../etc")
    with pytest.raises(NotFound, match="does not exist"):
        store.set_current("2026.01")
    from quantgrid.errors import Conflict

    with store.lock():  # a second release while one is being built is refused, not interleaved
        with pytest.raises(Conflict, match="another release"):
            with store.lock():
                pass
    with store.lock():  # and the lock is free again afterwards
        pass


def test_trial_merge_tells_a_helpful_candidate_from_a_degrading_one(world, tmp_path):
    store = R.ReleaseStore(tmp_path / "releases")
    _run(world, store, ["a1", "b1"], now=NOW, loo=False)
    cur = store.current_dir()
    good = R.trial_merge(cur, world["dirs"]["a2"], tmp_path / "trial_good")
    bad = R.trial_merge(cur, world["dirs"]["bad"], tmp_path / "trial_bad")
    # the trial is the N/(N+1) * release + 1/(N+1) * candidate merge, cut to the release's rank
    rel = R.read_factors(cur)
    exp = merge([rel, world["c"]["bad"].factors], [2 / 3, 1 / 3], rank=4).factors
    assert relative_error(R.read_factors(bad), exp) < 1e-5

    ev = R.Evaluator(world["base"], world["recipe"], world["bench"])
    names = [ev.add(cur), ev.add(good), ev.add(bad)]
    losses = ev.losses(names)
    verdict_good = R.degrades_release(losses[names[0]], losses[names[1]])
    verdict_bad = R.degrades_release(losses[names[0]], losses[names[2]])
    assert verdict_bad["degrades"] and verdict_bad["delta"] > 0 and verdict_bad["ci95"][0] > 0
    assert not verdict_good["degrades"]


def test_leave_one_out_impact_and_impact_weights(world, tmp_path):
    store = R.ReleaseStore(tmp_path / "releases")
    contribs = [world["c"][n] for n in ("a1", "b1", "bad")]
    contribs[0].score, contribs[1].score, contribs[2].score = 0.2, 0.1, -0.3  # hub-measured, never self-reported
    out = R.run_release(contribs, store, recipe=world["recipe"], base_path=world["base"], benchmark=world["bench"],
                        ood=(), now=NOW, dry_run=True, opts=R.BuildOptions(weighting="impact", rank=4))
    w = {a["id"]: a["weight"] for a in out.manifest["adapters"]}
    assert w == pytest.approx({"a1": 2 / 3, "b1": 1 / 3, "bad": 0.0})
    assert out.manifest["gate"]["passed"]
    # mallory's weight is 0, so removing her changes nothing
    imp = out.manifest["impact"]
    assert imp["mallory"] == pytest.approx(0.0, abs=1e-4)
    # without alice, bob's adapter takes all the weight: the release is b1 itself
    ev = R.Evaluator(world["base"], world["recipe"], world["bench"])
    name = ev.add(world["dirs"]["b1"])
    without_alice = ev.losses([name])[name].mean
    assert imp["alice"] == pytest.approx(without_alice - out.manifest["metrics"]["benchmark"]["new"], abs=1e-4)
