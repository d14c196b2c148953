from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def random_adapter(tiny_base, tmp_path_factory) -> str:
    """A LoRA adapter with non-zero B (so it changes the logits), saved by PEFT."""
    import torch

    from quantgrid.adapter import write_manifest
    from quantgrid.ml.models import attach_lora, base_info, load_base
    from quantgrid.recipe import Recipe

    model, _ = load_base(tiny_base)
    recipe = Recipe(base_model=tiny_base)
    peft_model = attach_lora(model, recipe)
    gen = torch.Generator().manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.05
    out = tmp_path_factory.mktemp("adapters") / "random"
    peft_model.save_pretrained(out)
    info = base_info(tiny_base)
    write_manifest(out, recipe=recipe, base_name=info.name, base_fingerprint=info.fingerprint)
    return str(out)


@pytest.fixture(scope="module")
def reference(tiny_base, random_adapter):
    """Torch logits of base and base+adapter for one prompt, and the prompt's ids."""
    import torch

    from quantgrid.ml.models import load_adapter, load_base

    model, tok = load_base(tiny_base)
    ids = tok("Question: What is the price to earnings ratio of a stock?\nAnswer:").input_ids
    peft_model = load_adapter(model, random_adapter)
    with torch.no_grad():
        x = torch.tensor([ids])
        adapted = peft_model(x).logits[0].numpy()
        with peft_model.disable_adapter():
            base = peft_model(x).logits[0].numpy()
    return {"ids": ids, "base": base, "adapter": adapted, "model": peft_model, "tokenizer": tok}
