"""Fixtures for the evaluation tests: a LoRA adapter really trained on the tiny base.

The adapter is made with PEFT and a few AdamW steps here (not with the trainer), so the
evaluation tests depend only on the adapter directory format (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import train_adapter


@pytest.fixture(scope="session")
def finance_train():
    from quantgrid.data import finance

    return finance.generate(200, seed=11)


@pytest.fixture(scope="session")
def finance_bench():
    from quantgrid.data import finance

    return finance.generate(40, seed=12)


@pytest.fixture(scope="session")
def trained_adapter(tiny_base, finance_train, tmp_path_factory) -> Path:
    return train_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "fin", finance_train)


@pytest.fixture()
def adapter_copy(trained_adapter, tmp_path) -> Path:
    """A private copy, for tests that write into the adapter directory."""
    import shutil

    dst = tmp_path / "fin"
    shutil.copytree(trained_adapter, dst)
    return dst


