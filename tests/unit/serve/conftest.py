"""Fixtures for the serving tests: LoRA adapters saved by PEFT on the tiny base, and an engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import engine_with

torch = pytest.importorskip("torch")

# (name, rank, target modules, dataset description) of the test adapters.
ADAPTER_SPECS = [
    ("options", 8, ["q_proj", "k_proj", "v_proj", "o_proj"], "Options pricing: implied volatility, greeks, strike"),
    ("bonds", 4, ["q_proj", "v_proj"], "Bond math: yield to maturity, duration, coupon"),
    ("crypto", 8, ["o_proj"], "Crypto markets: bitcoin, ethereum, funding rates"),
]


def save_peft_adapter(base: str, out: Path, seed: int, r: int, targets: list[str], description: str) -> Path:
    """A LoRA saved by PEFT, with random non-zero A and B so it changes the output."""
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


@pytest.fixture(scope="session")
def adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: save_peft_adapter(tiny_base, root / name, i, r, targets, desc)
            for i, (name, r, targets, desc) in enumerate(ADAPTER_SPECS)}


@pytest.fixture(scope="module")
def engine(tiny_base, adapters):
    eng = engine_with(tiny_base, adapters, max_batch=8, max_slots=2)
    eng.start()
    yield eng
    eng.stop()



@pytest.fixture(scope="session")
def trained_adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    """Adapters trained by QuantGridTrainer on distinct topics, one per prompt template."""
    from serve_trained import train_all

    return train_all(tiny_base, tmp_path_factory.mktemp("trained"))
