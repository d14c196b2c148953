"""Greedy, batched answer generation for the generation metrics.

Prompts are the exact prompt tokens training and proof of loss use (the masked prefix of
``quantgrid.ml.tokenize.encode``). They are sorted by length, left-padded within a batch
(so every prompt ends where generation starts) and passed with an attention mask, which
keeps the pads out of attention and the position ids right. Decoding is greedy, so the
answers are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from quantgrid.data.types import Example
from quantgrid.eval.loss import use_adapter
from quantgrid.ml.tokenize import IGNORE_INDEX, encode

# A base model that never learned to emit eos runs on into the next turn of the
# template; the answer ends where a new turn starts.
STOP_STRINGS = ("\nQuestion:", "\nContext:", "\n### ", "[INST]", "\n<|user|>")


def prompt_ids(tokenizer, example: Example, template: str, system_prompt: str | None = None) -> list[int]:
    enc = encode(tokenizer, example, template, None, system_prompt)
    n_prompt = next((i for i, t in enumerate(enc.labels) if t != IGNORE_INDEX), len(enc.labels))
    return enc.input_ids[:n_prompt]


def truncate_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut].strip()


def generate_answers(model, tokenizer, examples: Sequence[Example], *, template: str = "qa",
                     system_prompt: str | None = None, adapter: str | None = None, max_new_tokens: int = 128,
                     batch_size: int = 16, max_prompt_tokens: int | None = None,
                     progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers for ``examples`` (in their order) from the base (``adapter=None``, every
    adapter disabled) or from the named adapter of a ``PeftModel``.

    ``max_prompt_tokens`` keeps the last tokens of a longer prompt (the question sits at
    the end of every template).
    """
    import torch

    if not examples:
        return []
    prompts = [prompt_ids(tokenizer, ex, template, system_prompt) for ex in examples]
    if max_prompt_tokens:
        prompts = [p[-max_prompt_tokens:] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    answers = [""] * len(prompts)
    device = next(model.parameters()).device
    with use_adapter(model, adapter), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, use_cache=True, pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id, temperature=None, top_p=None, top_k=None)
            for row, i in enumerate(batch):
                text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
                answers[i] = truncate_at_stop(text)
            if progress:
                progress(len(batch))
    return answers
