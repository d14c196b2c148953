from __future__ import annotations

import pytest
from _adapters import random_lora

from quantgrid.ml.tiny import TINY_FAMILIES

PROMPT = "Question: What is the price to earnings ratio of a stock?\nAnswer: 12.5%"


def make_random_adapter(base: str, out) -> str:
    """A LoRA adapter with non-zero B (so it changes the logits), saved by PEFT, with a manifest."""
    return str(random_lora(base, out, seed=1))


def make_reference(base: str, adapter: str, prompt: str = PROMPT) -> dict:
    """Torch logits of base and base+adapter (loaded fresh, as PEFT users load it) for one prompt."""
    import torch

    from quantgrid.ml.models import load_adapter, load_base

    model, tok = load_base(base)
    ids = tok(prompt).input_ids
    peft_model = load_adapter(model, adapter)
    with torch.no_grad():
        x = torch.tensor([ids])
        adapted = peft_model(x).logits[0].numpy()
        with peft_model.disable_adapter():
            base_logits = peft_model(x).logits[0].numpy()
    return {"ids": ids, "base": base_logits, "adapter": adapted, "model": peft_model, "tokenizer": tok,
            "prompt": prompt, "bos": tok.bos_token_id is not None}


@pytest.fixture(scope="module")
def random_adapter(tiny_base, tmp_path_factory) -> str:
    return make_random_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "random")


@pytest.fixture(scope="module")
def reference(tiny_base, random_adapter):
    """Torch logits of base and base+adapter for one prompt, and the prompt's ids."""
    return make_reference(tiny_base, random_adapter, PROMPT.removesuffix(" 12.5%"))


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def family(request, tiny_family_base, tmp_path_factory):
    """One tiny base per family, with a random adapter and the PyTorch reference logits."""
    base = tiny_family_base(request.param)
    adapter = make_random_adapter(base, tmp_path_factory.mktemp("adapters") / request.param)
    return {"name": request.param, "base_dir": base, "adapter_dir": adapter, **make_reference(base, adapter)}
