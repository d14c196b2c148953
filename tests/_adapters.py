"""LoRA adapters with random non-zero weights, saved by PEFT on a tiny base, for the tests that
need an adapter which changes the model's output without training one."""

from __future__ import annotations

import json
from pathlib import Path


def random_lora(base: str, out: str | Path, *, seed: int, scale: float = 0.05, manifest: bool = True) -> Path:
    """The recipe's default LoRA on ``base`` with B drawn from N(0, scale²) (A keeps PEFT's init),
    saved to ``out``; with ``manifest``, quantgrid.json names its recipe and base as training writes it."""
    import torch

    from quantgrid.adapter import write_manifest
    from quantgrid.ml.models import attach_lora, base_info, load_base
    from quantgrid.recipe import Recipe

    out = Path(out)
    model, _ = load_base(base)
    recipe = Recipe(base_model=base)
    peft_model = attach_lora(model, recipe)
    gen = torch.Generator().manual_seed(seed)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * scale
    peft_model.save_pretrained(out)
    if manifest:
        info = base_info(base)
        write_manifest(out, recipe=recipe, base_name=info.name, base_fingerprint=info.fingerprint)
    return out


def save_peft_adapter(base: str, out: Path, seed: int, r: int, targets: list[str], description: str) -> Path:
    """A LoRA of rank ``r`` on ``targets`` saved by PEFT, with random non-zero A and B so it changes
    the output, and a quantgrid.json whose dataset description the router matches on."""
    import torch
    from peft import LoraConfig, get_peft_model

    from quantgrid.ml.models import load_base

    model, _ = load_base(base)
    torch.manual_seed(seed)
    pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=0.0))
    for name, p in pm.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(p, std=0.5)
    pm.save_pretrained(str(out))
    (out / "quantgrid.json").write_text(json.dumps({"dataset": {"description": description}}))
    return out
