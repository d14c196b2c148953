"""Proof of loss: parity with a plain Hugging Face loop, determinism, batching, bootstrap CI."""

from __future__ import annotations

import math

import pytest

from quantgrid.errors import EvalError
from quantgrid.eval.loss import (
    LossResult,
    bootstrap_delta_ci,
    completion_losses,
    encoded_losses,
    evaluate_loss,
    length_batches,
    load_for_eval,
    reference_losses,
)
from quantgrid.ml.tokenize import IGNORE_INDEX, Encoded, encode

# ---------------------------------------------------------------- pure parts


def test_loss_result_is_token_weighted():
    r = LossResult(None, nll=[2.0, 6.0, 0.0], n_tokens=[1, 3, 0])
    assert r.mean == pytest.approx(8.0 / 4)  # not the mean of per-example means (2 and 2 -> 2, coincidence-free below)
    assert r.losses[:2] == [2.0, 2.0] and math.isnan(r.losses[2])
    assert r.n_skipped == 1 and r.total_tokens == 4
    r2 = LossResult(None, nll=[1.0, 9.0], n_tokens=[1, 3])
    assert r2.mean == pytest.approx(2.5)  # per-example mean would be (1 + 3) / 2 = 2
    d = LossResult(None, nll=[0.0], n_tokens=[0]).to_dict(per_example=True)
    assert d["mean_nats_per_token"] is None and d["per_example"] == [None]


def test_length_batches_cover_every_index_once_within_budget_and_padding():
    lengths = [5, 100, 98, 7, 50, 51, 99, 6, 200]
    batches = length_batches(lengths, batch_tokens=300, max_padding=0.1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert lengths[b[0]] == width  # the longest leads
        assert width * len(b) <= 300 or len(b) == 1
        assert all(lengths[i] >= 0.9 * width for i in b)
    assert batches[0] == [8]  # 200 alone: a second row would exceed 300 slots
    assert [1, 6, 2] in batches  # 100, 99, 98 share a batch, in stable order
    assert length_batches(lengths, 300) == batches  # deterministic


def test_bootstrap_ci_hand_cases():
    a = LossResult(None, nll=[2.0, 4.0, 6.0, 1.0], n_tokens=[1, 2, 3, 1])
    same = bootstrap_delta_ci(a, a)
    assert same == (0.0, 0.0)
    # b is exactly 0.5 nats lower on every token: every resample gives -0.5
    b = LossResult("x", nll=[s - 0.5 * n for s, n in zip(a.nll, a.n_tokens, strict=True)], n_tokens=a.n_tokens)
    lo, hi = bootstrap_delta_ci(a, b)
    assert lo == pytest.approx(-0.5) and hi == pytest.approx(-0.5)
    # noisy differences: the interval contains the point estimate and is reproducible
    c = LossResult("y", nll=[1.0, 4.5, 5.0, 1.5], n_tokens=a.n_tokens)
    lo, hi = bootstrap_delta_ci(a, c, n=2000, seed=3)
    assert lo <= c.mean - a.mean <= hi and lo < hi
    assert bootstrap_delta_ci(a, c, n=2000, seed=3) == (lo, hi)
    with pytest.raises(EvalError):
        bootstrap_delta_ci(a, LossResult(None, nll=[1.0], n_tokens=[1]))


# ---------------------------------------------------------------- on the tiny base


@pytest.fixture(scope="module")
def model_and_tok(tiny_base):
    from quantgrid.ml.models import load_base

    return load_base(tiny_base, device="cpu")


@pytest.fixture(scope="module")
def examples():
    from quantgrid.data import finance
    from quantgrid.data.types import Example

    exs = finance.generate(24, seed=5)
    # plus odd shapes: an empty prompt (trains on the whole text) and a context item
    return exs + [Example("", "Net income is revenue minus expenses."),
                  Example("What is the ratio?", "It is 2.5.", context="Assets 10, liabilities 4.")]


def test_matches_plain_hf_loop_on_the_base(model_and_tok, examples):
    model, tok = model_and_tok
    res = completion_losses(model, tok, examples, template="qa", batch_tokens=512)[None]
    enc = [encode(tok, ex, "qa") for ex in examples]
    ref = reference_losses(model, enc)
    assert len(res.losses) == len(examples)
    assert max(abs(a - b) for a, b in zip(res.losses, ref, strict=True)) < 1e-4
    total = sum(r * e.n_completion_tokens for r, e in zip(ref, enc, strict=True)) / sum(e.n_completion_tokens for e in enc)
    assert res.mean == pytest.approx(total, abs=1e-4)
    assert res.padding_fraction <= 0.1


def test_batching_does_not_change_the_numbers(model_and_tok, examples):
    model, tok = model_and_tok
    a = completion_losses(model, tok, examples, batch_tokens=64)[None]  # mostly one per batch
    b = completion_losses(model, tok, examples, batch_tokens=4096)[None]
    c = completion_losses(model, tok, examples, batch_tokens=4096)[None]
    assert b.nll == c.nll  # bitwise deterministic run to run
    assert max(abs(x - y) for x, y in zip(a.losses, b.losses, strict=True)) < 1e-4


def test_prompt_filling_max_length_is_skipped_not_scored(model_and_tok):
    from quantgrid.data.types import Example

    model, tok = model_and_tok
    long_q = Example("word " * 200, "short answer")
    ok = Example("What is 2 + 2?", "4")
    res = completion_losses(model, tok, [long_q, ok], max_length=32)[None]
    assert res.n_tokens[0] == 0 and math.isnan(res.losses[0]) and res.n_skipped == 1
    assert res.n_tokens[1] > 0 and math.isfinite(res.mean)


def test_empty_benchmark_is_an_error(model_and_tok):
    model, tok = model_and_tok
    with pytest.raises(EvalError, match="empty"):
        completion_losses(model, tok, [])


def test_encoded_losses_handles_hand_made_sequences(model_and_tok):
    model, _ = model_and_tok
    enc = [Encoded([1, 5, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 6, 7]),
           Encoded([1, 9], [IGNORE_INDEX, 9]),
           Encoded([1, 2, 3], [IGNORE_INDEX] * 3)]
    res = encoded_losses(model, enc, pad_token_id=0)[None]
    assert res.n_tokens == [2, 1, 0]
    ref = reference_losses(model, enc)
    assert res.losses[0] == pytest.approx(ref[0], abs=1e-4) and res.losses[1] == pytest.approx(ref[1], abs=1e-4)


def test_base_and_adapters_in_one_load_match_separate_loops(tiny_base, trained_adapter, examples, model_and_tok):
    import torch
    from peft import PeftModel

    model, tok, names = load_for_eval(tiny_base, [trained_adapter, trained_adapter], device="cpu")
    assert isinstance(model, PeftModel) and names == ["adapter_0", "adapter_1"]
    # make the second adapter different, so a mix-up between them would show
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "adapter_1" in n and "lora_B" in n:
                p.mul_(-1.0)
    examples = examples[-10:]  # keeps the three reference loops short
    res = completion_losses(model, tok, examples, adapters=[None, "adapter_0", "adapter_1"])
    enc = [encode(tok, ex, "qa") for ex in examples]
    for key in (None, "adapter_0", "adapter_1"):
        ref = reference_losses(model, enc, key)
        assert max(abs(a - b) for a, b in zip(res[key].losses, ref, strict=True)) < 1e-4, key
    assert len({round(res[k].mean, 6) for k in res}) == 3
    # the base with adapters disabled equals a plain load of the base
    plain, _ = model_and_tok
    assert completion_losses(plain, tok, examples)[None].mean == pytest.approx(res[None].mean, abs=1e-6)
    # the active adapter is restored afterwards
    assert model.active_adapter == "adapter_0"
    with pytest.raises(EvalError, match="no adapter named"):
        completion_losses(model, tok, examples[:2], adapters=["nope"])


def test_evaluate_loss_trained_adapter_beats_base(tiny_base, trained_adapter, finance_bench):
    from quantgrid.recipe import Recipe

    res = evaluate_loss(tiny_base, [trained_adapter], finance_bench, Recipe(), device="cpu")
    base, ad = res[None], res[str(trained_adapter)]
    assert ad.mean < base.mean
    lo, hi = bootstrap_delta_ci(base, ad)
    assert lo <= ad.mean - base.mean <= hi < 0
