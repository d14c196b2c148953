"""Real adapters for release tests: a few optimizer steps of PEFT LoRA on the tiny base.

The tiny base is random-init, so a few dozen steps on finance Q&A lower its finance loss
clearly: a genuinely helpful adapter, made in about a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

from quantgrid.data.finance import general_ood, generate
from quantgrid.recipe import Recipe


def release_recipe(base: str) -> Recipe:
    return Recipe.from_dict({"base_model": base, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                             "training": {"max_seq_length": 256}})


def hidden(n: int = 24, seed: int = 11):
    """(benchmark, ood) small enough for fast tests."""
    return generate(n, seed), general_ood(12, seed=seed)


def train_adapter(base: str, recipe: Recipe, out: Path, *, seed: int, steps: int = 25, lr: float = 2e-2,
                  n_examples: int = 24, scale: float = 1.0) -> Path:
    """Train a LoRA adapter on finance items drawn from ``seed`` and save it with PEFT.

    ``scale`` multiplies lora_B after training: scale=-25 gives a harmful adapter.
    """
    from quantgrid.ml.models import attach_lora, load_base
    from quantgrid.ml.tokenize import IGNORE_INDEX, encode

    torch.manual_seed(seed)
    model, tok = load_base(base, device="cpu")
    model = attach_lora(model, recipe)
    enc = [encode(tok, ex, recipe.prompt_template, 128, recipe.system_prompt) for ex in generate(n_examples, seed)]
    width = max(len(e) for e in enc)
    ids = torch.tensor([e.input_ids + [tok.pad_token_id] * (width - len(e)) for e in enc])
    labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e)) for e in enc])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
    if scale != 1.0:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(scale)
    model.save_pretrained(str(out))
    return out
