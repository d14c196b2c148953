"""Multi-adapter LoRA in one batched forward pass.

Every target ``nn.Linear`` of a plain Hugging Face model is wrapped in a
:class:`MultiLoraLinear`. The wrapper holds the LoRA factors of every loaded adapter,
stacked by *slot*, and reads from a context which slot each batch row uses. The base
matmul runs once for the whole batch; each row then gets its own adapter's low-rank
term ``x · Aᵢᵀ · Bᵢᵀ · scalingᵢ``. Rows with no adapter (slot -1) skip that term.

The math is in two pure functions (``lora_delta_bmm``, ``lora_delta_segmented``) that
are tested by table against a per-row loop. Shapes use:

    N  batch rows         T  tokens per row       S  slots
    d_in / d_out  the Linear's in/out features     R  the (padded) LoRA rank
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

NO_ADAPTER = -1


def lora_delta_bmm(x: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
    """Gather-then-bmm LoRA term for a batch where every row may use another adapter.

    x:        (N, T, d_in)     the Linear's input
    a_t:      (S, d_in, R)     Aᵀ per slot
    b_t:      (S, R, d_out)    Bᵀ·scaling per slot (scaling folded in at load time)
    slot_ids: (N,) long       slot of each row, all >= 0 here
    returns   (N, T, d_out)

    One gather per factor plus two bmm calls, whatever the number of distinct adapters:
    the cost does not grow with the adapter count (the point of the whole module).
    """
    a = a_t.index_select(0, slot_ids)  # (N, d_in, R)
    b = b_t.index_select(0, slot_ids)  # (N, R, d_out)
    return torch.bmm(torch.bmm(x, a), b)  # (N, T, R) -> (N, T, d_out)


def lora_delta_segmented(x: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor,
                         slot_ids: torch.Tensor) -> torch.Tensor:
    """Same result as :func:`lora_delta_bmm`, one pair of matmuls per distinct slot.

    Cheaper when the batch holds one or two adapters (no gather copies); slot -1 rows
    stay zero. Shapes as in :func:`lora_delta_bmm`.
    """
    out = x.new_zeros(x.shape[0], x.shape[1], b_t.shape[-1])  # (N, T, d_out)
    for s in torch.unique(slot_ids).tolist():
        if s < 0:
            continue
        rows = (slot_ids == s).nonzero().squeeze(1)  # (n_s,)
        out[rows] = x[rows] @ a_t[s] @ b_t[s]  # (n_s, T, d_in) @ (d_in, R) @ (R, d_out)
    return out


@dataclass(eq=False)
class SlotPlan:
    """What a batch needs, worked out once per batch instead of once per layer.

    slot_ids:   (N,) slot per row, -1 = no adapter
    mode:       "none"    no row has an adapter
                "one"     every row the same adapter: plain matmuls
                "mixed"   every row has an adapter, all different: gather + bmm per row
                "partial" like mixed, but some rows have none: only active rows computed
    rows:       (n_active,) indices of the rows with an adapter (None: all rows)
    gather_ids: (n_active,) the slot of each active row, whose factors the wrappers gather

    (Grouping rows by adapter so each adapter's factors are read once per step was tried:
    on CPU its extra scatter/gather ops cost more than the memory traffic they save.)
    """

    slot_ids: torch.Tensor
    mode: str
    slot: int = NO_ADAPTER
    rows: torch.Tensor | None = None
    gather_ids: torch.Tensor | None = None


def plan_slots(slot_ids: torch.Tensor) -> SlotPlan:
    active = slot_ids >= 0
    n_active = int(active.sum())
    if n_active == 0:
        return SlotPlan(slot_ids, "none")
    if n_active == slot_ids.numel() and bool((slot_ids == slot_ids[0]).all()):
        return SlotPlan(slot_ids, "one", slot=int(slot_ids[0]))
    rows = None if n_active == slot_ids.numel() else active.nonzero().squeeze(1)
    ids = slot_ids if rows is None else slot_ids.index_select(0, rows)  # (n_active,)
    return SlotPlan(slot_ids, "mixed" if rows is None else "partial", rows=rows, gather_ids=ids)


def apply_lora(base_out: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor,
               plan: SlotPlan, gathered: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``base_out + lora term`` (in place), rows of slot -1 left untouched.

    base_out: (N, T, d_out); x: (N, T, d_in). ``gathered`` = (a_t[gather_ids], b_t[gather_ids]),
    shapes (n_active, d_in, R) and (n_active, R, d_out), may be passed in when the caller reuses them across
    decode steps (the batch's rows and slots did not change).
    """
    if plan.mode == "none":
        return base_out
    if plan.mode == "one":  # one adapter for the whole batch: plain matmuls, no gather
        flat = base_out.view(-1, base_out.shape[-1])  # (N*T, d_out)
        flat.addmm_(x.reshape(-1, x.shape[-1]) @ a_t[plan.slot], b_t[plan.slot])
        return base_out
    if gathered is None:
        gathered = (a_t.index_select(0, plan.gather_ids), b_t.index_select(0, plan.gather_ids))
    a, b = gathered
    if plan.mode == "mixed":
        return base_out.baddbmm_(torch.bmm(x, a), b)  # (N, T, R) @ (N, R, d_out) added in place
    xs = x.index_select(0, plan.rows)  # (n_active, T, d_in)
    return base_out.index_add_(0, plan.rows, torch.bmm(torch.bmm(xs, a), b))


class LoraContext(threading.local):
    """Which slot each row of the running batch uses (a SlotPlan); set around a forward pass.

    ``capture`` (module name -> input) records Linear inputs, for the router.
    """

    plan: SlotPlan | None = None
    capture: dict[str, torch.Tensor] | None = None


class MultiLoraLinear(nn.Module):
    """A Linear plus ``S`` LoRA slots; reads the per-row slot index from ``context``."""

    def __init__(self, base: nn.Linear, name: str, context: LoraContext, slots: int, rank: int):
        super().__init__()
        self.base = base
        self.name = name
        self.context = context
        w = base.weight
        # Buffers, not parameters: inference only, and state_dict() of the wrapped model stays clean.
        self.register_buffer("a_t", torch.zeros(slots, base.in_features, rank, dtype=w.dtype, device=w.device),
                             persistent=False)
        self.register_buffer("b_t", torch.zeros(slots, rank, base.out_features, dtype=w.dtype, device=w.device),
                             persistent=False)
        # Gathered factors of the current batch, reused by every decode step until the
        # batch's rows change (a new SlotPlan) or a slot is rewritten.
        self._gathered: tuple[SlotPlan, tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def rank(self) -> int:
        return self.a_t.shape[-1]

    def set_slot(self, slot: int, a: torch.Tensor | None, b: torch.Tensor | None, scaling: float) -> None:
        """Store adapter factors in ``slot``: a (r, d_in), b (d_out, r) as PEFT saves them.

        A smaller rank is zero-padded to R (exact); None clears the slot (the adapter has
        no LoRA on this module).
        """
        self._gathered = None
        self.a_t[slot].zero_()
        self.b_t[slot].zero_()
        if a is None or b is None:
            return
        r = a.shape[0]
        if r > self.rank:
            self._grow_rank(r)
        self.a_t[slot, :, :r] = a.t().to(self.a_t)
        self.b_t[slot, :r, :] = (b.t() * scaling).to(self.b_t)

    def _grow_rank(self, r: int) -> None:
        pad = r - self.rank
        self.a_t = torch.nn.functional.pad(self.a_t, (0, pad))
        self.b_t = torch.nn.functional.pad(self.b_t, (0, 0, 0, pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if ctx.capture is not None:
            ctx.capture[self.name] = x.detach()
        out = self.base(x)
        plan = ctx.plan
        if plan is None or plan.mode == "none":
            return out
        gathered = None
        if plan.gather_ids is not None:
            if self._gathered is None or self._gathered[0] is not plan:
                self._gathered = (plan, (self.a_t.index_select(0, plan.gather_ids),
                                         self.b_t.index_select(0, plan.gather_ids)))
            gathered = self._gathered[1]
        return apply_lora(out, x, self.a_t, self.b_t, plan, gathered)


def wrap_linears(model: nn.Module, names: list[str], context: LoraContext, slots: int,
                 rank: int) -> dict[str, MultiLoraLinear]:
    """Replace the named Linear modules of ``model`` with MultiLoraLinear wrappers (in place)."""
    wrapped: dict[str, MultiLoraLinear] = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        mod = getattr(parent, child)
        if isinstance(mod, MultiLoraLinear):
            wrapped[name] = mod
            continue
        if not isinstance(mod, nn.Linear):
            raise TypeError(f"{name} is a {type(mod).__name__}, not a Linear")
        new = MultiLoraLinear(mod, name, context, slots, rank)
        setattr(parent, child, new)
        wrapped[name] = new
    return wrapped


@contextlib.contextmanager
def use_slots(context: LoraContext, slots: torch.Tensor | SlotPlan | None,
              capture: dict[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Run forward passes with ``slots`` — slot ids (N,) or a SlotPlan — as the row -> slot map.

    Pass the same SlotPlan to consecutive decode steps of an unchanged batch so the
    wrappers reuse their gathered factors."""
    plan = plan_slots(slots) if isinstance(slots, torch.Tensor) else slots
    prev = (context.plan, context.capture)
    context.plan, context.capture = plan, capture
    try:
        yield
    finally:
        context.plan, context.capture = prev
