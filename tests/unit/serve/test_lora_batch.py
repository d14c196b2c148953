"""Multi-adapter LoRA math, by table against a per-row reference loop."""

from __future__ import annotations

import pytest
import torch

from quantgrid.serve.lora_batch import (
    LoraContext,
    MultiLoraLinear,
    apply_lora,
    lora_delta_bmm,
    lora_delta_segmented,
    plan_slots,
    use_slots,
    wrap_linears,
)


def reference(x, a_t, b_t, slot_ids):
    """Row by row: x_i · Aᵀ_s · Bᵀ_s, zero for slot -1."""
    rows = []
    for i, s in enumerate(slot_ids.tolist()):
        rows.append(torch.zeros(x.shape[1], b_t.shape[-1]) if s < 0 else x[i] @ a_t[s] @ b_t[s])
    return torch.stack(rows)


CASES = [  # (N rows, T tokens, slots, slot ids)
    (1, 1, 1, [0]),
    (4, 3, 4, [0, 1, 2, 3]),
    (5, 1, 3, [2, 2, 0, 1, 2]),
    (3, 7, 2, [1, 1, 1]),
    (6, 2, 4, [-1, 0, -1, 3, 3, -1]),
    (2, 4, 2, [-1, -1]),
    (8, 3, 3, [1, 0, 1, 1, 2, 0, 1, 1]),      # adapters shared by several rows
    (7, 1, 5, [4, -1, 4, 0, -1, 4, 0]),      # shared, and rows that have no adapter
]


@pytest.mark.parametrize("n,t,s,ids", CASES)
def test_batched_lora_matches_per_row_loop(n, t, s, ids):
    g = torch.Generator().manual_seed(n * 100 + t)
    d_in, d_out, r = 12, 10, 3
    x = torch.randn(n, t, d_in, generator=g)
    a_t = torch.randn(s, d_in, r, generator=g)
    b_t = torch.randn(s, r, d_out, generator=g)
    slot_ids = torch.tensor(ids)
    ref = reference(x, a_t, b_t, slot_ids)
    base = torch.randn(n, t, d_out, generator=g)
    torch.testing.assert_close(lora_delta_segmented(x, a_t, b_t, slot_ids), ref)
    plan = plan_slots(slot_ids)
    torch.testing.assert_close(apply_lora(base.clone(), x, a_t, b_t, plan), base + ref)
    if min(ids) >= 0:
        torch.testing.assert_close(lora_delta_bmm(x, a_t, b_t, slot_ids), ref)


def test_rows_without_adapter_are_untouched_bit_for_bit():
    x, base = torch.randn(3, 2, 8), torch.randn(3, 2, 5)
    a_t, b_t = torch.randn(2, 8, 4), torch.randn(2, 4, 5)
    out = apply_lora(base.clone(), x, a_t, b_t, plan_slots(torch.tensor([-1, 1, -1])))
    assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])
    assert not torch.allclose(out[1], base[1])


def test_wrapper_matches_peft_formula_with_rank_padding_and_scaling():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4, bias=True)
    ctx = LoraContext()
    mod = MultiLoraLinear(lin, "proj", ctx, slots=3, rank=2)
    a1, b1 = torch.randn(2, 6), torch.randn(4, 2)
    a2, b2 = torch.randn(5, 6), torch.randn(4, 5)  # larger rank: the slots grow
    mod.set_slot(0, a1, b1, scaling=2.0)
    mod.set_slot(2, a2, b2, scaling=0.5)
    assert mod.rank == 5
    x = torch.randn(3, 2, 6)
    with torch.no_grad():
        plain = mod(x)  # no context: the base Linear alone
        with use_slots(ctx, torch.tensor([0, -1, 2])):
            out = mod(x)
    torch.testing.assert_close(plain, lin(x))
    torch.testing.assert_close(out[0], lin(x[0]) + 2.0 * (x[0] @ a1.t() @ b1.t()))
    torch.testing.assert_close(out[1], lin(x[1]))
    torch.testing.assert_close(out[2], lin(x[2]) + 0.5 * (x[2] @ a2.t() @ b2.t()))
    mod.set_slot(0, None, None, 1.0)  # clearing a slot removes its term
    with torch.no_grad(), use_slots(ctx, torch.tensor([0, 0, 0])):
        torch.testing.assert_close(mod(x), lin(x))


def test_wrap_linears_replaces_in_place_and_rejects_non_linear():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    ctx = LoraContext()
    wrapped = wrap_linears(model, ["0"], ctx, slots=2, rank=2)
    assert isinstance(model[0], MultiLoraLinear) and wrapped["0"] is model[0]
    assert wrap_linears(model, ["0"], ctx, 2, 2)["0"] is model[0]  # idempotent
    with pytest.raises(TypeError):
        wrap_linears(model, ["1"], ctx, 2, 2)


def test_capture_records_linear_inputs():
    lin = torch.nn.Linear(3, 3)
    ctx = LoraContext()
    mod = MultiLoraLinear(lin, "p", ctx, 1, 1)
    cap: dict = {}
    x = torch.randn(1, 2, 3)
    with torch.no_grad(), use_slots(ctx, None, capture=cap):
        mod(x)
    assert torch.equal(cap["p"], x)
    assert ctx.capture is None and ctx.plan is None


@pytest.mark.parametrize("ids,mode,gather,rows", [
    ([-1, -1], "none", None, None),
    ([2, 2, 2], "one", None, None),
    ([0, 1, 0], "mixed", [0, 1, 0], None),
    ([-1, 3, 1], "partial", [3, 1], [1, 2]),
    ([3, -1, 1, 3, 3], "partial", [3, 1, 3, 3], [0, 2, 3, 4]),
])
def test_plan_modes(ids, mode, gather, rows):
    plan = plan_slots(torch.tensor(ids))
    assert plan.mode == mode
    if gather is not None:
        assert plan.gather_ids.tolist() == gather
    assert (plan.rows.tolist() if plan.rows is not None else None) == rows


def test_gathered_factors_are_reused_per_plan_and_refreshed_when_a_slot_changes():
    torch.manual_seed(1)
    lin = torch.nn.Linear(4, 4)
    ctx = LoraContext()
    mod = MultiLoraLinear(lin, "p", ctx, slots=2, rank=2)
    mod.set_slot(0, torch.randn(2, 4), torch.randn(4, 2), 1.0)
    mod.set_slot(1, torch.randn(2, 4), torch.randn(4, 2), 1.0)
    x = torch.randn(2, 1, 4)
    plan = plan_slots(torch.tensor([0, 1]))
    with torch.no_grad(), use_slots(ctx, plan):
        first = mod(x)
        assert mod._gathered[0] is plan
        torch.testing.assert_close(mod(x), first)
        a2, b2 = torch.randn(2, 4), torch.randn(4, 2)
        mod.set_slot(1, a2, b2, 1.0)  # a new adapter in slot 1: the cached gather must not be used
        torch.testing.assert_close(mod(x)[1], lin(x[1]) + x[1] @ a2.t() @ b2.t())
