"""Data-parallel training under ``torchrun`` (or ``accelerate launch``): the few collective steps.

Every process holds the whole (small) training set in the same order and the same LoRA
initialisation (rank 0's seed, broadcast). An optimizer step's micro-batches are dealt out
round-robin: process ``r`` runs micro-batches ``r, r + W, ...`` of the step's window, each
loss divided by the completion tokens of the *whole* window, and the gradients are summed
across processes. The update is then exactly the single-process one for the same
``batch_size`` x ``grad_accum`` (up to float summation order, and LoRA dropout draws its
masks in another order), so the global batch and the recipe do not change with the number
of GPUs; more processes only make each step faster. Evaluation runs in full on every process
(so early stopping and best-checkpoint decisions agree without a collective); rank 0 alone
prints, logs and writes checkpoints and the adapter.

Backends: NCCL on CUDA, gloo on CPU. Plain ``torch.distributed`` rather than DDP: the model
is wrapped by PEFT and the window is uneven across ranks, and one all-reduce per step over
the LoRA gradients is all data parallelism needs here.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when started by torchrun/accelerate with more than one process."""
    return world_size() > 1


def init(device_hint: str | None = None) -> str:
    """Join the process group (once); returns this process's device."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and (device_hint is None or device_hint.startswith("cuda"))
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every process."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_gradients(params) -> None:
    """All-reduce (sum) the gradients; a process that ran no micro-batch contributes zeros."""
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def sum_scalar(x: float, device: str) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
