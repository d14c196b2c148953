"""Padding-free packing: the packed row must score exactly like the examples one by one."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from quantgrid.data import Example  # noqa: E402
from quantgrid.ml.batching import epoch_order, loss_sum, micro_batches, pack  # noqa: E402
from quantgrid.ml.tokenize import IGNORE_INDEX, Encoded, encode  # noqa: E402


def _enc(ids: list[int], n_prompt: int) -> Encoded:
    return Encoded(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:])


def test_pack_layout_positions_and_targets():
    b = pack([_enc([1, 5, 6, 7], 2), _enc([1, 8, 9], 1)])
    assert b.input_ids.tolist() == [[1, 5, 6, 7, 1, 8, 9]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]  # restarts mark the boundary
    # logit at t predicts t+1: completion tokens 6, 7 (first example) and 8, 9 (second)
    assert b.keep.tolist() == [1, 2, 4, 5]
    assert b.targets.tolist() == [6, 7, 8, 9]
    assert (b.n_tokens, b.n_loss_tokens, b.n_examples) == (7, 4, 2)


def test_pack_never_predicts_across_a_boundary():
    # An example whose first token is labelled must not be predicted from the previous example.
    b = pack([_enc([1, 2, 3], 1), Encoded([4, 5], [4, 5])])
    assert b.keep.tolist() == [0, 1, 3]  # position 2 -> 3 (token 4) would cross the boundary
    assert b.targets.tolist() == [2, 3, 5]


@pytest.fixture(scope="module", params=["transformers-sdpa-mask", "packed_sdpa"])
def model_and_encoded(tiny_base, request):
    """Both ways of honouring the boundaries: transformers' block mask and ours."""
    from quantgrid.ml.batching import use_packed_attention
    from quantgrid.ml.models import attach_lora, load_base
    from quantgrid.recipe import Recipe

    model, tok = load_base(tiny_base)
    if request.param == "packed_sdpa":
        assert use_packed_attention(model)
    torch.manual_seed(0)
    model = attach_lora(model, Recipe())
    with torch.no_grad():  # a non-zero LoRA update, so the adapter path is exercised too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.eval()
    examples = [
        Example("What is the P/E ratio of a stock priced at 40 with EPS of 2?", "20"),
        Example("Define free cash flow.", "Operating cash flow minus capital expenditures, the cash a firm "
                "can return to investors."),
        Example("Is a bond's price higher or lower when rates rise?", "Lower."),
        Example("What does EBITDA stand for?", "Earnings before interest, taxes, depreciation and amortization."),
    ]
    return model, [encode(tok, e, "qa", 256) for e in examples]


def test_packed_loss_equals_per_example_loss(model_and_encoded):
    model, enc = model_and_encoded
    with torch.no_grad():
        packed = loss_sum(model, pack(enc)).item()
        one_by_one = sum(loss_sum(model, pack([e])).item() for e in enc)
        full_logits = loss_sum(model, pack(enc), slice_logits=False).item()
    assert packed == pytest.approx(one_by_one, abs=1e-5 * sum(e.n_completion_tokens for e in enc))
    assert full_logits == pytest.approx(packed, rel=1e-6)


def test_without_position_restarts_examples_would_leak(model_and_encoded):
    """Guards the test above: with one running position range the loss does change."""
    model, enc = model_and_encoded
    b = pack(enc)
    b.position_ids = torch.arange(b.n_tokens).unsqueeze(0)
    with torch.no_grad():
        leaky = loss_sum(model, b).item()
        one_by_one = sum(loss_sum(model, pack([e])).item() for e in enc)
    assert abs(leaky - one_by_one) > 1e-3


def test_gradients_match_per_example(model_and_encoded):
    model, enc = model_and_encoded
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(batches):
        model.zero_grad()
        for b in batches:
            loss_sum(model, b).backward()
        return torch.cat([p.grad.flatten() for p in params]).clone()

    g_packed = grads([pack(enc)])
    g_single = grads([pack([e]) for e in enc])
    model.zero_grad()
    assert torch.allclose(g_packed, g_single, atol=1e-5, rtol=1e-4)


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(50, seed=1, epoch=0), epoch_order(50, seed=1, epoch=0)
    assert a == b and sorted(a) == list(range(50))
    assert epoch_order(50, seed=1, epoch=1) != a
    assert epoch_order(50, seed=2, epoch=0) != a


def test_micro_batches_resume_from_a_position():
    enc = [_enc([1, i + 10, i + 11], 1) for i in range(10)]
    order = epoch_order(10, seed=0, epoch=0)
    all_batches = list(micro_batches(enc, order, batch_size=3))
    assert [i for i, _ in all_batches] == [0, 1, 2, 3]
    assert [b.n_examples for _, b in all_batches] == [3, 3, 3, 1]
    resumed = list(micro_batches(enc, order, batch_size=3, start=2))
    assert [i for i, _ in resumed] == [2, 3]
    assert torch.equal(resumed[0][1].input_ids, all_batches[2][1].input_ids)


def test_packed_attention_leaves_ordinary_batches_alone(tiny_base):
    """Padded batches and generation (KV cache) still work after the switch."""
    from quantgrid.ml.batching import use_packed_attention
    from quantgrid.ml.models import load_base

    model, tok = load_base(tiny_base)
    ids = torch.randint(4, 200, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        gen_ref = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
        assert use_packed_attention(model)
        assert model.config._attn_implementation == "quantgrid_packed_sdpa"
        got = model(input_ids=ids, attention_mask=mask).logits
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.allclose(ref[mask.bool()], got[mask.bool()], atol=1e-5)
    assert torch.equal(gen, gen_ref)
