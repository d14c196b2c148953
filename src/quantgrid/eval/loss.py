"""Proof of loss: mean cross-entropy per completion token, in nats, over a benchmark.

The hub's validation, the release gate and `quantgrid eval` all score submissions with
this module, so it is exact and deterministic:

* Every example goes through ``quantgrid.ml.tokenize.encode`` -- the same prompt-masked
  token ids training used -- so eval loss and train loss are the same quantity.
* The base and any number of adapters are scored with ONE model load: the model is a
  ``PeftModel`` holding named adapters; ``None`` means the base with adapters disabled.
* Examples are sorted by length and cut into batches of at most ``batch_tokens`` padded
  tokens of similar length, so at most 10% of the compute goes to padding
  (``LossResult.padding_fraction`` reports the share).
  Padding goes on the right and no attention mask is passed: with a causal mask a real
  token never attends to a later pad, so the scores are exactly those of an unpadded
  forward, and SDPA keeps its fast ``is_causal`` path.
* The vocabulary projection (the largest matmul for 150k-token vocabularies) runs only on
  the hidden states that predict completion tokens, not on prompts or padding.

``bootstrap_delta_ci`` gives a paired bootstrap 95% confidence interval for the
difference between two results on the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantgrid.data.types import Example
from quantgrid.errors import EvalError
from quantgrid.ml.tokenize import IGNORE_INDEX, Encoded, encode

if TYPE_CHECKING:
    from pathlib import Path

    from quantgrid.recipe import Recipe

DEFAULT_BATCH_TOKENS = 8192
DEFAULT_MAX_PADDING = 0.1  # most of a batch's slots that may be padding
_HEAD_CHUNK = 2048  # rows of hidden states projected to the vocabulary at once (bounds memory)


@dataclass
class LossResult:
    """Cross-entropy of one model variant (the base or one adapter) over a benchmark.

    ``mean`` is token-weighted: the total nats over all completion tokens divided by the
    number of completion tokens, so long answers weigh more than short ones, exactly like
    the training loss.
    """

    name: str | None  # adapter name; None for the base
    nll: list[float]  # per example: summed nats over its completion tokens
    n_tokens: list[int]  # per example: number of scored (completion) tokens
    padding_fraction: float = 0.0  # share of the forward's token slots that were padding
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return sum(self.n_tokens)

    @property
    def mean(self) -> float:
        """Nats per completion token over the whole benchmark (nan if nothing was scored)."""
        total = self.total_tokens
        return sum(self.nll) / total if total else math.nan

    @property
    def losses(self) -> list[float]:
        """Per example: mean nats per completion token (nan for an example with none)."""
        return [s / n if n else math.nan for s, n in zip(self.nll, self.n_tokens, strict=True)]

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean) if math.isfinite(self.mean) else math.nan

    @property
    def n_skipped(self) -> int:
        """Examples with no completion token left (the prompt alone filled ``max_length``)."""
        return sum(1 for n in self.n_tokens if n == 0)

    def to_dict(self, per_example: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mean_nats_per_token": _finite(self.mean),
            "perplexity": _finite(self.perplexity),
            "n_examples": len(self.n_tokens),
            "n_tokens": self.total_tokens,
            "n_skipped": self.n_skipped,
        }
        if per_example:
            d["per_example"] = [_finite(x) for x in self.losses]
            d["per_example_tokens"] = list(self.n_tokens)
        return d


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def bootstrap_delta_ci(a: LossResult, b: LossResult, n: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap CI of ``b.mean - a.mean`` over the same examples.

    Examples (not tokens) are resampled with replacement, the same draw for both results,
    and the token-weighted mean is recomputed for each draw. A negative interval that
    excludes 0 means ``b`` has a lower loss than ``a`` beyond sampling noise.
    """
    import numpy as np

    if len(a.n_tokens) != len(b.n_tokens) or a.n_tokens != b.n_tokens:
        raise EvalError("bootstrap_delta_ci needs two results on the same examples",
                        hint="score both models in one completion_losses call")
    nll_a, nll_b = np.asarray(a.nll, dtype=np.float64), np.asarray(b.nll, dtype=np.float64)
    tokens = np.asarray(a.n_tokens, dtype=np.float64)
    if not len(tokens) or tokens.sum() == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tokens), size=(n, len(tokens)))  # (draws, examples)
    t = tokens[idx].sum(axis=1)
    t[t == 0] = np.nan  # a draw of only empty examples says nothing
    deltas = (nll_b[idx].sum(axis=1) - nll_a[idx].sum(axis=1)) / t
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(deltas, [alpha, 1 - alpha])
    return float(lo), float(hi)


# ---------------------------------------------------------------- batching


def length_batches(lengths: Sequence[int], batch_tokens: int, max_padding: float = 0.1) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    A batch holds as many sequences as fit in ``batch_tokens`` padded slots (at least one,
    however long), and only sequences at least ``1 - max_padding`` times as long as its
    longest, so no more than ``max_padding`` of any batch is padding. Sorting is stable on
    (length, index), so the batches -- and with them every floating-point sum -- are the
    same on every run.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            width = lengths[current[0]]  # the first is the longest
            if width * (len(current) + 1) > batch_tokens or lengths[i] < (1 - max_padding) * width:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _causal_lm(model):
    """The transformers CausalLM inside a PeftModel (LoRA layers are injected in place)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.get_base_model()
    return model


@contextmanager
def use_adapter(model, name: str | None) -> Iterator[None]:
    """Run the block with adapter ``name`` active, or with every adapter off for ``None``."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        if name is not None:
            raise EvalError(f"adapter {name!r} requested but the model has no adapters")
        yield
        return
    if name is None:
        with model.disable_adapter():
            yield
        return
    if name not in model.peft_config:
        raise EvalError(f"the model holds no adapter named {name!r}",
                        hint=f"loaded adapters: {', '.join(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)


def _batch_nll(lm, batch: list[Encoded], pad_id: int, device) -> list[float]:
    """Summed completion-token nats for each sequence of one right-padded batch."""
    import torch
    import torch.nn.functional as F

    width = max(len(e) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e)] = torch.tensor(e.input_ids)
        labels[row, : len(e)] = torch.tensor(e.labels)
    # position t predicts token t+1: shift the labels left by one
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX  # (B, T-1)
    rows, cols = keep.nonzero(as_tuple=True)
    ids = ids.to(device)
    decoder = lm.get_decoder()
    hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state  # (B, T, H)
    picked = hidden[:, :-1][rows.to(device), cols.to(device)]  # (N, H): only completion predictors
    gold = targets[rows, cols].to(device)  # (N,)
    head = lm.get_output_embeddings()
    nll = torch.empty(len(gold), dtype=torch.float32, device=device)
    for start in range(0, len(gold), _HEAD_CHUNK):
        sl = slice(start, start + _HEAD_CHUNK)
        logits = head(picked[sl]).float()  # (n, V), cross-entropy in float32 even for bf16
        nll[sl] = F.cross_entropy(logits, gold[sl], reduction="none")
    sums = torch.zeros(len(batch), dtype=torch.float64)
    sums.index_add_(0, rows, nll.double().cpu())
    return sums.tolist()


def encoded_losses(model, encoded: Sequence[Encoded], *, adapters: Sequence[str | None] = (None,),
                   pad_token_id: int = 0, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                   max_padding: float = DEFAULT_MAX_PADDING, progress: Callable[[int], None] | None = None) -> dict[str | None, LossResult]:
    """``completion_losses`` for already-encoded sequences (see there)."""
    import torch

    if batch_tokens < 1:
        raise EvalError(f"batch_tokens must be positive, got {batch_tokens}")
    lm = _causal_lm(model)
    device = next(lm.parameters()).device
    lengths = [len(e) for e in encoded]
    # Sequences with nothing to score are not run at all.
    scored = [i for i, e in enumerate(encoded) if e.n_completion_tokens > 0]
    batches = [[scored[j] for j in b] for b in length_batches([lengths[i] for i in scored], batch_tokens, max_padding)]
    slots = sum(lengths[b[0]] * len(b) for b in batches)
    padding = 1 - sum(lengths[i] for i in scored) / slots if slots else 0.0
    n_tokens = [e.n_completion_tokens for e in encoded]
    was_training = lm.training
    lm.eval()
    results: dict[str | None, LossResult] = {}
    try:
        for name in adapters:
            nll = [0.0] * len(encoded)
            with use_adapter(model, name), torch.inference_mode():
                for batch in batches:
                    sums = _run_batch(lm, [encoded[i] for i in batch], pad_token_id, device)
                    for i, s in zip(batch, sums, strict=True):
                        nll[i] = s
                    if progress:
                        progress(len(batch))
            results[name] = LossResult(name=name, nll=nll, n_tokens=list(n_tokens), padding_fraction=padding)
    finally:
        lm.train(was_training)
    return results


def _run_batch(lm, batch: list[Encoded], pad_id: int, device) -> list[float]:
    """One batch; on a CUDA out-of-memory error, split it in halves and retry."""
    import torch

    try:
        return _batch_nll(lm, batch, pad_id, device)
    except torch.cuda.OutOfMemoryError:
        if len(batch) == 1:
            from quantgrid.errors import OutOfMemoryError

            raise OutOfMemoryError(f"out of memory scoring a sequence of {len(batch[0])} tokens",
                                   hint="lower --max-length, or load the base in 4-bit") from None
        torch.cuda.empty_cache()
        half = len(batch) // 2
        return _run_batch(lm, batch[:half], pad_id, device) + _run_batch(lm, batch[half:], pad_id, device)


def completion_losses(model, tokenizer, examples: Sequence[Example], *, template: str = "qa",
                      max_length: int | None = None, system_prompt: str | None = None,
                      adapters: Sequence[str | None] = (None,), batch_tokens: int = DEFAULT_BATCH_TOKENS,
                      progress: Callable[[int], None] | None = None) -> dict[str | None, LossResult]:
    """Score ``examples`` under each entry of ``adapters`` with one loaded model.

    ``model`` is a transformers causal LM or a ``PeftModel`` holding named adapters.
    ``adapters`` lists what to score: an adapter name, or ``None`` for the base with every
    adapter disabled. The result maps each entry of ``adapters`` to its ``LossResult``
    (per-example summed nats and token counts in the order of ``examples``).

    ``progress`` is called with the number of examples finished after every batch
    (``len(examples) * len(adapters)`` in all, minus examples with nothing to score).
    """
    if not examples:
        raise EvalError("the benchmark is empty: nothing to score",
                        hint="pass a benchmark file with at least one question/answer pair")
    encoded = [encode(tokenizer, ex, template, max_length, system_prompt) for ex in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return encoded_losses(model, encoded, adapters=adapters, pad_token_id=pad, batch_tokens=batch_tokens,
                          progress=progress)


def load_for_eval(base_path: str, adapter_dirs: Sequence[str | Path] = (), *, device: str | None = None,
                  load_in_4bit: bool | None = None, check_base: bool = True):
    """Load the base once and attach every adapter under its own name.

    Returns ``(model, tokenizer, names)``, ``names[i]`` being the adapter name of
    ``adapter_dirs[i]``. An adapter trained for another base raises
    ``AdapterMismatchError`` naming both bases.
    """
    from quantgrid.ml.models import base_info, check_adapter_base, load_adapter, load_base

    info = base_info(base_path)
    if check_base:  # before loading gigabytes of weights
        for d in adapter_dirs:
            check_adapter_base(d, info)
    model, tokenizer = load_base(base_path, device=device, load_in_4bit=load_in_4bit)
    names = [f"adapter_{i}" for i in range(len(adapter_dirs))]
    for name, d in zip(names, adapter_dirs, strict=True):
        model = load_adapter(model, d, adapter_name=name)
    model.eval()
    return model, tokenizer, names


def evaluate_loss(base_path: str, adapter_dirs: Sequence[str | Path], examples: Sequence[Example],
                  recipe: Recipe, *, device: str | None = None, load_in_4bit: bool | None = None,
                  batch_tokens: int = DEFAULT_BATCH_TOKENS, max_length: int | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str | None, LossResult]:
    """Load ``base_path`` once, attach ``adapter_dirs``, score the base and each adapter.

    Keys of the result: ``None`` for the base, then ``str(adapter_dir)`` for each adapter.
    The prompt template, system prompt and max length come from ``recipe``.
    """
    model, tokenizer, names = load_for_eval(base_path, adapter_dirs, device=device, load_in_4bit=load_in_4bit)
    res = completion_losses(
        model, tokenizer, examples, template=recipe.prompt_template, system_prompt=recipe.system_prompt,
        max_length=max_length or recipe.training.max_seq_length, adapters=[None, *names],
        batch_tokens=batch_tokens, progress=progress)
    out: dict[str | None, LossResult] = {None: res[None]}
    for name, d in zip(names, adapter_dirs, strict=True):
        out[str(d)] = res[name]
    return out


def reference_losses(model, encoded: Sequence[Encoded], adapter: str | None = None) -> list[float]:
    """The plain per-example Hugging Face loop: ``model(ids, labels=labels).loss`` one by one.

    Slow; kept as the parity reference for tests and the throughput benchmark. Returns the
    per-example mean nats per completion token.
    """
    import torch

    out = []
    with use_adapter(model, adapter), torch.inference_mode():
        device = next(model.parameters()).device
        for e in encoded:
            if e.n_completion_tokens == 0:
                out.append(math.nan)
                continue
            ids = torch.tensor([e.input_ids], device=device)
            labels = torch.tensor([e.labels], device=device)
            out.append(float(model(input_ids=ids, labels=labels).loss))
    return out
