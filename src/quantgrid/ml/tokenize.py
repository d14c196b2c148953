"""Turning Examples into token ids with the prompt masked, the one way every journey uses.

Training, proof of loss, validation and the release gate must score exactly the same
tokens, so they all go through ``encode``. The prompt and the completion are tokenized
separately (as torchtune does per message): the boundary between them is then exact,
and the completion's tokens do not depend on how the prompt happens to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantgrid.data.types import Example

IGNORE_INDEX = -100  # what torch's cross_entropy skips: prompt tokens carry no loss


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens, the token id on completion tokens

    @property
    def n_completion_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer, example: Example, template: str, max_length: int | None = None,
           system_prompt: str | None = None) -> Encoded:
    """Token ids of prompt + completion + eos, with labels masked on the prompt.

    A sequence longer than ``max_length`` is truncated from the end of the completion;
    if even the prompt does not fit, the example keeps no completion tokens (callers
    count and report those).
    """
    from quantgrid.data.prompts import render

    prompt_text, completion_text = render(example, template, tokenizer=tokenizer, system_prompt=system_prompt)
    # The chat template already wrote <s>; other templates get it from the tokenizer.
    add_special = template != "chat"
    prompt_ids = tokenizer(prompt_text, add_special_tokens=add_special)["input_ids"] if prompt_text else (
        [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [])
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels)


def encode_all(tokenizer, examples: Sequence[Example], template: str, max_length: int | None = None,
               system_prompt: str | None = None) -> list[Encoded]:
    return [encode(tokenizer, ex, template, max_length, system_prompt) for ex in examples]
