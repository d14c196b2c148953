"""Fixtures for the serving tests: LoRA adapters saved by PEFT on the tiny base, and an engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from _adapters import save_peft_adapter
from serve_helpers import running_engine

torch = pytest.importorskip("torch")

# (name, rank, target modules, dataset description) of the test adapters.
ADAPTER_SPECS = [
    ("options", 8, ["q_proj", "k_proj", "v_proj", "o_proj"], "Options pricing: implied volatility, greeks, strike"),
    ("bonds", 4, ["q_proj", "v_proj"], "Bond math: yield to maturity, duration, coupon"),
    ("crypto", 8, ["o_proj"], "Crypto markets: bitcoin, ethereum, funding rates"),
]


@pytest.fixture(scope="session")
def adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: save_peft_adapter(tiny_base, root / name, i, r, targets, desc)
            for i, (name, r, targets, desc) in enumerate(ADAPTER_SPECS)}


@pytest.fixture(scope="module")
def engine(tiny_base, adapters):
    with running_engine(tiny_base, adapters, max_batch=8, max_slots=2) as eng:
        yield eng



@pytest.fixture(scope="session")
def trained_adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    """Adapters trained by QuantGridTrainer on distinct topics, one per prompt template."""
    from serve_trained import train_all

    return train_all(tiny_base, tmp_path_factory.mktemp("trained"))
