"""This machine's fp32 matmul peak, measured in the same run as a benchmark, and model FLOPs.

Every benchmark reports achieved model GFLOP per CPU-second (model FLOPs per token x tokens per
CPU-second) as a fraction of what a large ``torch.mm`` reaches here per CPU-second with the same
number of threads, so a reader sees how much headroom is left on the hardware, not just the
ratio to a peer.

Model FLOPs per token use the usual dense-transformer count (Kaplan et al., 2020): a forward
pass costs 2 x N multiply-adds per token for N non-embedding weights that the token goes
through, plus the output projection (2 x hidden x vocab) where logits are computed. Training
a LoRA adapter on a frozen base costs about 2x the forward (the backward pass needs the
activation gradients through every frozen weight, but no weight gradients for them);
attention's T^2 term is left out (it is small at these lengths), so the fractions are slight
underestimates.
"""

from __future__ import annotations

import time


def matmul_peak_gflops(threads: int = 1, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP per CPU-second of an n x n ``torch.mm`` over ``repeats`` tries.

    Per CPU-second, not per wall second: on a shared machine a process is descheduled for
    part of the wall time, and the benchmarks' throughputs are compared per CPU-second too
    (``fraction``), so both sides of the fraction exclude the neighbours' share.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm up (allocations, kernel selection)
        best = float("inf")
        for _ in range(repeats):
            tick = time.process_time()
            torch.mm(a, b)
            best = min(best, time.process_time() - tick)
        return 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(before)


def body_params(config) -> int:
    """Weights a token passes through in the layers (attention + MLP), from a transformers config."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o; k, v
    mlp = 3 * h * config.intermediate_size  # gate, up, down (SwiGLU)
    return layers * (attn + mlp)


def forward_flops_per_token(config, with_logits: bool = True) -> float:
    head = 2 * config.hidden_size * config.vocab_size if with_logits else 0
    return 2 * body_params(config) + head


def train_flops_per_token(config) -> float:
    """LoRA on a frozen base: forward + activation-gradient backward, about 2x the forward.

    The layers only: trainers differ in where they compute logits (quantgrid only where a
    completion token is predicted), so the vocabulary projection is left out for every one
    of them rather than credited to whoever computes the most of it.
    """
    return 2 * forward_flops_per_token(config, with_logits=False)


def fraction(tokens_per_cpu_s: float, flops_per_token: float, peak_gflops: float) -> dict[str, float]:
    """Achieved model GFLOP per CPU-second over the matmul peak per CPU-second."""
    achieved = tokens_per_cpu_s * flops_per_token / 1e9
    return {"achieved_gflops_per_cpu_s": achieved, "peak_gflops_per_cpu_s": peak_gflops,
            "fraction_of_peak": achieved / peak_gflops}
