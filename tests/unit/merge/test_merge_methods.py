"""Properties of the merge methods, checked against dense delta-W and against PEFT."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgrid.errors import ConfigError, ModelError
from quantgrid.merge.methods import (
    METHODS,
    LoraFactors,
    delta_cosine,
    factors_from_state_dict,
    impact_weights,
    merge,
    relative_error,
    state_dict_from_factors,
    subspace_error,
)

SHAPES = {"layers.0.q_proj": (24, 40), "layers.0.v_proj": (16, 40), "layers.1.q_proj": (24, 40)}


def rand_adapter(seed: int, r: int = 4, scaling: float = 2.0, scale: float = 1.0) -> dict[str, LoraFactors]:
    g = torch.Generator().manual_seed(seed)
    return {m: LoraFactors(torch.randn(r, d_in, generator=g), scale * torch.randn(d_out, r, generator=g), scaling)
            for m, (d_out, d_in) in SHAPES.items()}


def dense_sum(adapters, weights) -> dict[str, torch.Tensor]:
    return {m: sum(w * a[m].delta(torch.float64) for a, w in zip(adapters, weights, strict=True)) for m in SHAPES}


def deltas_close(x, y, tol=1e-5) -> bool:
    return relative_error(x, {m: f.delta(torch.float64) for m, f in y.items()}) < tol


EXACT_AT_ONE = {"svd": {}, "cat": {}, "ties": {"density": 1.0}, "dare_linear": {"density": 1.0},
                "dare_ties": {"density": 1.0}, "median": {}, "trimmed_mean": {}}


def test_registry_lists_every_method():
    assert set(EXACT_AT_ONE) == set(METHODS)


@pytest.mark.parametrize("method", sorted(EXACT_AT_ONE))
def test_one_adapter_with_weight_one_gives_it_back(method):
    a = rand_adapter(1)
    res = merge([a], [1.0], method=method, **EXACT_AT_ONE[method])
    assert res.rank == 4
    assert deltas_close(res.factors, a)
    assert res.max_error < 1e-6
    for f in res.factors.values():
        assert f.scaling == 1.0 and f.rank == 4


@pytest.mark.parametrize("method,opts", [("svd", {}), ("cat", {}), ("ties", {"density": 0.3}),
                                         ("dare_linear", {"density": 0.5}), ("dare_ties", {"density": 0.5}),
                                         ("median", {}), ("trimmed_mean", {"trim": 0.2})])
def test_result_does_not_depend_on_input_order(method, opts):
    adapters = [rand_adapter(s) for s in range(5)]
    rank = None if method == "cat" else 6
    forward = merge(adapters, method=method, rank=rank, **opts)
    backward = merge(adapters[::-1], method=method, rank=rank, **opts)
    assert deltas_close(forward.factors, backward.factors, 1e-4)
    assert forward.errors == pytest.approx(backward.errors, abs=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.permutations(range(4)), st.lists(st.floats(-2, 2).filter(lambda w: abs(w) > 1e-3), min_size=4, max_size=4))
def test_svd_merge_is_permutation_invariant_for_any_weights(perm, weights):
    adapters = [rand_adapter(s) for s in range(4)]
    a = merge(adapters, weights, rank=16)
    b = merge([adapters[i] for i in perm], [weights[i] for i in perm], rank=16)
    assert deltas_close(a.factors, b.factors, 1e-4)


def test_cat_is_exact_with_rank_sum():
    adapters = [rand_adapter(s, r=r) for s, r in [(1, 2), (2, 4), (3, 3)]]
    weights = [0.5, -1.5, 2.0]
    res = merge(adapters, weights, method="cat")
    assert res.rank == 9 and res.errors == {m: 0.0 for m in SHAPES}
    assert relative_error(res.factors, dense_sum(adapters, weights)) < 1e-6


def test_svd_at_full_rank_is_exact_and_truncation_error_is_optimal():
    adapters = [rand_adapter(s) for s in range(3)]
    full = merge(adapters, rank=12)
    assert relative_error(full.factors, dense_sum(adapters, [1 / 3] * 3)) < 1e-5
    assert full.max_error < 1e-5
    cut = merge(adapters, rank=5)
    exact = dense_sum(adapters, [1 / 3] * 3)
    for m, d in exact.items():
        s = torch.linalg.svdvals(d)
        best = math.sqrt(float((s[5:] ** 2).sum() / (s ** 2).sum()))  # Eckart-Young optimum
        assert cut.errors[m] == pytest.approx(best, rel=1e-4)
        got = cut.factors[m].delta(torch.float64)
        assert float(torch.linalg.norm(got - d) / torch.linalg.norm(d)) == pytest.approx(best, rel=1e-3)


def test_rank_above_the_data_is_zero_padded():
    res = merge([rand_adapter(1, r=2)], [1.0], rank=8)
    assert all(f.rank == 8 for f in res.factors.values())
    assert deltas_close(res.factors, rand_adapter(1, r=2))


def test_module_missing_from_one_adapter_counts_as_zero():
    a, b = rand_adapter(1), rand_adapter(2)
    del b["layers.0.v_proj"]
    for method in ("svd", "median"):
        res = merge([a, b], [0.5, 0.5], method=method, rank=8)
        ref = 0.5 * a["layers.0.v_proj"].delta(torch.float64)
        assert relative_error({"v": res.factors["layers.0.v_proj"]}, {"v": ref}) < 1e-5


def test_robust_aggregators_resist_one_poisoned_contributor():
    signal = rand_adapter(100)
    g = torch.Generator().manual_seed(7)

    def honest(i):
        return {m: LoraFactors(f.A + 0.05 * torch.randn(f.A.shape, generator=g), f.B, f.scaling)
                for m, f in signal.items()}

    honest_set = [honest(i) for i in range(9)]
    poisoned = {m: LoraFactors(f.A, 100 * f.B, f.scaling) for m, f in honest(9).items()}
    reference = merge(honest_set, rank=16).factors  # the honest-only merge
    ref_dense = {m: f.delta(torch.float64) for m, f in reference.items()}
    plain = merge(honest_set + [poisoned], rank=16)
    assert relative_error(plain.factors, ref_dense) > 5  # the plain mean is wrecked
    for method, opts in (("median", {}), ("trimmed_mean", {"trim": 0.1})):
        robust = merge(honest_set + [poisoned], method=method, rank=16, **opts)
        assert relative_error(robust.factors, ref_dense) < 0.1, method


def test_ties_drops_minority_signs_and_small_entries():
    one = torch.ones(1, 2)
    a = {"m": LoraFactors(torch.tensor([[1.0, 0.01]]), one.T.clone(), 1.0)}  # delta rows [1, .01]
    b = {"m": LoraFactors(torch.tensor([[3.0, -0.02]]), one.T.clone(), 1.0)}
    c = {"m": LoraFactors(torch.tensor([[-0.5, 0.02]]), one.T.clone(), 1.0)}
    res = merge([a, b, c], method="ties", density=0.5, rank=2)
    d = res.factors["m"].delta()
    # column 0: top-half entries 1, 3, -0.5 -> elected +, mean of agreeing (1, 3) = 2; column 1 pruned
    assert torch.allclose(d, torch.tensor([[2.0, 0.0], [2.0, 0.0]]), atol=1e-5)


def test_dare_is_reproducible_and_unbiased_in_expectation():
    a = rand_adapter(3)
    r1 = merge([a], [1.0], method="dare_linear", density=0.5, seed=1, rank=16)
    r2 = merge([a], [1.0], method="dare_linear", density=0.5, seed=1, rank=16)
    r3 = merge([a], [1.0], method="dare_linear", density=0.5, seed=2, rank=16)
    assert deltas_close(r1.factors, r2.factors, 1e-6)
    assert not deltas_close(r1.factors, r3.factors, 1e-2)
    # rescaled by 1/density, so the total mass is kept on average
    ref = a["layers.0.q_proj"].delta().sum()
    got = torch.linalg.svdvals(r1.factors["layers.0.q_proj"].delta()).sum()
    assert got > 0 and torch.isfinite(ref)


def test_delta_cosine_matches_dense_and_spots_near_duplicates():
    a, b = rand_adapter(1), rand_adapter(2)
    flat = lambda x: torch.cat([f.delta(torch.float64).flatten() for f in x.values()])  # noqa: E731
    dense = float(torch.nn.functional.cosine_similarity(flat(a), flat(b), dim=0))
    assert delta_cosine(a, b) == pytest.approx(dense, abs=1e-9)
    assert delta_cosine(a, a) == pytest.approx(1.0)
    assert delta_cosine(a, {m: (f.A, f.B, -3.0) for m, f in a.items()}) == pytest.approx(-1.0)
    noisy = {m: LoraFactors(f.A + 0.05 * torch.randn(f.A.shape), f.B, f.scaling) for m, f in a.items()}
    assert delta_cosine(a, noisy) > 0.99 > 0.5 > abs(delta_cosine(a, b))
    zero = {m: LoraFactors(f.A, torch.zeros_like(f.B), 1.0) for m, f in a.items()}
    assert delta_cosine(a, zero) == 0.0


def test_subspace_error_measures_what_truncation_dropped():
    adapters = [rand_adapter(s) for s in range(3)]
    full = merge(adapters, rank=12).factors
    assert all(subspace_error(full, a) < 1e-6 for a in adapters)  # nothing dropped
    assert subspace_error(merge(adapters[:1], [1.0]).factors, adapters[0]) < 1e-6
    cut = merge(adapters, rank=3).factors
    errs = [subspace_error(cut, a) for a in adapters]
    assert all(0.3 < e < 1.0 for e in errs)
    # dense check for one module: 1 - ||P_U dW P_V||^2 / ||dW||^2
    m = "layers.0.q_proj"
    d = adapters[0][m].delta(torch.float64)
    U = torch.linalg.qr(cut[m].B.double())[0]
    V = torch.linalg.qr(cut[m].A.double().T)[0]
    dense = float(torch.linalg.norm(d - U @ U.T @ d @ V @ V.T) / torch.linalg.norm(d))
    assert subspace_error({m: cut[m]}, {m: adapters[0][m]}) == pytest.approx(dense, rel=1e-6)
    assert subspace_error({}, adapters[0]) == pytest.approx(1.0)


def test_impact_weights_never_reward_harm():
    assert impact_weights([0.2, 0.1, -0.5]) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert impact_weights([-1.0, 0.0]) == [0.5, 0.5]
    assert impact_weights([]) == []


def test_state_dict_round_trip_and_peft_scaling_patterns():
    a = rand_adapter(4, scaling=1.0)
    sd = state_dict_from_factors(a)
    assert set(sd) == {f"{m}.lora_{s}.weight" for m in SHAPES for s in "AB"}
    back = factors_from_state_dict(sd, {"r": 4, "lora_alpha": 8, "alpha_pattern": {"v_proj": 4}})
    assert back["layers.0.q_proj"].scaling == 2.0 and back["layers.0.v_proj"].scaling == 1.0
    rs = factors_from_state_dict(sd, {"r": 4, "lora_alpha": 8, "use_rslora": True})
    assert rs["layers.1.q_proj"].scaling == 4.0
    with pytest.raises(ModelError, match="unexpected tensor"):
        factors_from_state_dict({"x.lora_magnitude_vector": torch.ones(3)}, {"r": 4})
    with pytest.raises(ModelError, match="not both"):
        factors_from_state_dict({"x.lora_A.weight": torch.ones(4, 3)}, {"r": 4})


def test_bad_inputs_raise_clear_errors():
    a = rand_adapter(1)
    with pytest.raises(ConfigError, match="unknown merge method"):
        merge([a], method="average")
    with pytest.raises(ConfigError, match="2 weights for 1 adapters"):
        merge([a], [0.5, 0.5])
    with pytest.raises(ConfigError, match="nothing to merge"):
        merge([])
    with pytest.raises(ConfigError, match="treats contributors equally"):
        merge([a, rand_adapter(2)], [0.2, 0.8], method="median")
    with pytest.raises(ConfigError, match="needs rank >= 8"):
        merge([a, a], method="cat", rank=4)
    with pytest.raises(ConfigError, match="density"):
        merge([a], method="ties", density=0.0)
    wide = {m: LoraFactors(torch.randn(4, 41), torch.randn(24, 4), 1.0) for m in SHAPES}
    with pytest.raises(ModelError, match="different shapes"):
        merge([a, wide])
    with pytest.raises(ModelError, match="shapes do not fit"):
        LoraFactors(torch.randn(4, 3), torch.randn(3, 5))


# ------------------------------------------------------------------ agreement with PEFT


@pytest.fixture(scope="module")
def peft_model(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    cfg = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, LoraConfig(**cfg), adapter_name="a0")
    for name in ("a1", "a2"):
        model.add_adapter(name, LoraConfig(**cfg))
    return model


def _factors(model, adapter: str) -> dict[str, LoraFactors]:
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(model, adapter_name=adapter)
    cfg = model.peft_config[adapter]
    return factors_from_state_dict(sd, {"r": cfg.r, "lora_alpha": cfg.lora_alpha})


@pytest.mark.parametrize("combination,rank", [("svd", 4), ("svd", 12), ("cat", None)])
def test_agrees_with_peft_add_weighted_adapter(peft_model, combination, rank):
    names, weights = ["a0", "a1", "a2"], [0.5, 1.0, -0.25]
    target = f"peft_{combination}_{rank}"
    peft_model.add_weighted_adapter(names, weights, target, combination_type=combination, svd_rank=rank)
    theirs = _factors(peft_model, target)
    ours = merge([_factors(peft_model, n) for n in names], weights, method=combination, rank=rank)
    assert set(ours.factors) == set(theirs)
    assert ours.rank == peft_model.peft_config[target].r
    assert relative_error(ours.factors, theirs) < 1e-4


def test_trimmed_mean_trims_at_least_one_each_side_from_five_adapters():
    from quantgrid.merge.methods import trim_count

    assert [trim_count(n) for n in (1, 2, 3, 4)] == [0, 0, 0, 0]  # too few to trim both ends
    assert [trim_count(n) for n in (5, 9, 10, 19, 20, 30)] == [1, 1, 1, 1, 2, 3]
    assert trim_count(5, trim=0.0) == 1 and trim_count(7, trim=0.49) == 3  # never all of them
    # Five adapters, one poisoned (x100): the old floor(0.1 * 5) = 0 kept it in the mean.
    g = torch.Generator().manual_seed(3)
    signal = {"m": LoraFactors(torch.randn(4, 8, generator=g), torch.randn(6, 4, generator=g), 1.0)}
    honest = [{"m": LoraFactors(signal["m"].A + 0.02 * torch.randn(4, 8, generator=g), signal["m"].B, 1.0)}
              for _ in range(4)]
    poisoned = {"m": LoraFactors(signal["m"].A, 100 * signal["m"].B, 1.0)}
    ref = {"m": merge(honest, rank=8).factors["m"].delta(torch.float64)}
    robust = merge(honest + [poisoned], method="trimmed_mean", rank=8)
    assert relative_error(robust.factors, ref) < 0.1


@pytest.mark.parametrize("case", ["gram", "dependent rows -> qr", "combined rank >= width -> dense"])
def test_every_svd_route_gives_the_optimal_truncation(case):
    """The svd method picks its route by cost; each one must give the Eckart-Young optimum."""
    from quantgrid.merge.methods import svd_route

    if case == "gram":
        adapters = [rand_adapter(s) for s in range(3)]  # R = 12 < 16
    elif case == "dependent rows -> qr":
        twin = rand_adapter(0)
        adapters = [twin, rand_adapter(1), {m: LoraFactors(f.A.clone(), 2 * f.B, f.scaling) for m, f in twin.items()}]
    else:
        adapters = [rand_adapter(s, r=6) for s in range(3)]  # R = 18 >= 16 (the v_proj width)
    R = sum(a["layers.0.v_proj"].rank for a in adapters)
    expected = "gram" if case != "combined rank >= width -> dense" else "dense"
    assert svd_route(R, *SHAPES["layers.0.v_proj"]) == expected
    exact = dense_sum(adapters, [1 / 3] * 3)
    cut = merge(adapters, rank=5)
    for m, d in exact.items():
        s = torch.linalg.svdvals(d)
        best = math.sqrt(float((s[5:] ** 2).sum() / (s ** 2).sum()))
        got = cut.factors[m].delta(torch.float64)
        assert float(torch.linalg.norm(got - d) / torch.linalg.norm(d)) == pytest.approx(best, rel=1e-4), m
        assert cut.errors[m] == pytest.approx(best, rel=1e-4)
