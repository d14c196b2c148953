"""Padding-free batches: a micro-batch of examples packed into one row.

Ordinary batches pad every example to the longest one, so on finance Q&A (short
questions next to long filings) most of the compute goes to padding. Here the
examples of a micro-batch are concatenated into a single row of shape [1, T] and
``position_ids`` restart at 0 for each example, which is where every example's
attention must end. Two ways to honour that:

- transformers (>= 4.56) reads the restarts itself: flash-attention uses them as
  varlen boundaries (on CUDA), and sdpa/eager get a block-diagonal T x T mask. That
  mask is correct but attends over the whole row, T^2 work where the examples need
  only sum(len_i^2).
- ``packed_sdpa`` (registered as the ``quantgrid_packed_sdpa`` attention) does what
  flash-attention's varlen kernel does, with plain sdpa: one causal attention per
  example, no mask at all. The trainer uses it unless the model runs flash-attention.

``tests/unit/ml/test_batching.py`` checks that the packed loss and gradients equal the
per-example ones.

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


PACKED_ATTENTION = "quantgrid_packed_sdpa"


def packed_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                position_ids: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed example (transformers' attention-function API).

    query [1, Hq, T, D], key/value [1, Hkv, T, D] -> output [1, T, Hq, D]. Examples start
    where ``position_ids`` is 0. Anything that is not a packed training row (a padding
    mask, a KV cache during generation, batch > 1) goes to the stock sdpa function.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    t = query.shape[2]
    if attention_mask is not None or position_ids is None or query.shape[0] != 1 or key.shape[2] != t:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    starts = torch.nonzero(position_ids[0] == 0).flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    lengths = [e - s for s, e in zip(starts, [*starts[1:], t], strict=True)]
    if key.shape[1] != query.shape[1]:  # grouped-query attention: share each K/V head
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    # torch.split, not slicing: its backward concatenates the pieces' gradients, where
    # each slice's backward would zero-fill a full [1, H, T, D] buffer.
    out = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout if module.training else 0.0, is_causal=True, scale=scaling)
        for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2),
                           strict=True)
    ], dim=2)
    return out.transpose(1, 2).contiguous(), None


def use_packed_attention(model) -> bool:
    """Switch ``model`` (a transformers model, before PEFT wraps it) to ``packed_sdpa``.

    Returns False, changing nothing, when the model runs flash-attention, which handles
    packed rows natively.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if "flash" in str(getattr(model.config, "_attn_implementation", "")):
        return False
    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)
    model.set_attn_implementation(PACKED_ATTENTION)
    return True


def _packed_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs):
    """No T x T mask for a packed row (``packed_sdpa`` needs none); sdpa's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


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
