"""Padding-free batches: a micro-batch of examples packed into one row.

Ordinary batches pad every example to the longest one, so on finance Q&A (short
questions next to long filings) most of the compute goes to padding. Here the
examples of a micro-batch are concatenated into a single row of shape [1, T] and
``position_ids`` restart at 0 for each example. transformers (>= 4.56) reads those
restarts as sequence boundaries and builds a block-diagonal causal mask for sdpa and
eager attention (and flash-attention uses them directly), so no token attends to
another example; ``tests/unit/ml/test_batching.py`` checks that the packed loss equals
the per-example loss.

Only completion tokens are scored, so the trainer asks the model for logits at those
positions only (``keep``): the vocabulary projection, the largest matmul of a small
model, is skipped on prompt tokens too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from quantgrid.ml.tokenize import IGNORE_INDEX, Encoded


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [1, T] the examples back to back
    position_ids: torch.Tensor  # [1, T] 0..len-1 for each example: the boundaries
    keep: torch.Tensor  # [K] positions t whose next token t+1 is a completion token
    targets: torch.Tensor  # [K] the token at t+1 for each kept t
    n_examples: int

    @property
    def n_tokens(self) -> int:
        """Real tokens in the row (there is no padding to leave out)."""
        return int(self.input_ids.shape[1])

    @property
    def n_loss_tokens(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: str | torch.device) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.keep.to(device),
                           self.targets.to(device), self.n_examples)


def pack(examples: Sequence[Encoded]) -> PackedBatch:
    """Concatenate ``examples`` into one row; see the module docstring."""
    if not examples:
        raise ValueError("pack() needs at least one example")
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []
    for ex in examples:
        ids.extend(ex.input_ids)
        pos.extend(range(len(ex.input_ids)))
        # The first token of an example is never a target: predicting it would mean
        # predicting across the boundary from the previous example.
        labels.append(IGNORE_INDEX)
        labels.extend(ex.labels[1:])
    label_t = torch.tensor(labels, dtype=torch.long)
    # Causal LM: the logit at t predicts the token at t+1.
    keep = torch.nonzero(label_t[1:] != IGNORE_INDEX).flatten()
    return PackedBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        keep=keep,
        targets=label_t[keep + 1],
        n_examples=len(examples),
    )


def loss_sum(model, batch: PackedBatch, *, slice_logits: bool = True) -> torch.Tensor:
    """Summed cross-entropy (nats) over the batch's completion tokens.

    The caller divides by the number of completion tokens in the whole optimizer step,
    so gradient accumulation gives exactly the token-mean loss of one big batch.
    ``slice_logits=False`` computes every logit and selects afterwards, for model
    classes (Unsloth's) that don't take a tensor ``logits_to_keep``.
    """
    if batch.n_loss_tokens == 0:
        # Still touch the graph so backward() works; contributes zero.
        return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
    # attention_mask stays None: that is what makes transformers derive the packed
    # (block-diagonal) mask from position_ids.
    if slice_logits:
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, logits_to_keep=batch.keep,
                    use_cache=False)
        logits = out.logits[0]
    else:
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
        logits = out.logits[0, batch.keep]
    return torch.nn.functional.cross_entropy(logits.float(), batch.targets, reduction="sum")


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation fixed by (seed, epoch), so a resumed
    run replays exactly the order the interrupted run would have seen."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batches(examples: Sequence[Encoded], order: Sequence[int], batch_size: int,
                  start: int = 0) -> Iterator[tuple[int, PackedBatch]]:
    """(index, packed batch) for the micro-batches of one epoch, from micro-batch ``start``."""
    n_batches = (len(order) + batch_size - 1) // batch_size
    for i in range(start, n_batches):
        chunk = order[i * batch_size:(i + 1) * batch_size]
        yield i, pack([examples[j] for j in chunk])


def eval_batches(examples: Sequence[Encoded], batch_size: int) -> Iterator[PackedBatch]:
    """Deterministic packed batches over ``examples``, longest first (stable timing)."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    for _, b in micro_batches(examples, order, batch_size):
        yield b
