"""Session fixtures shared by every test: the offline tiny base, built once."""

from __future__ import annotations

import os

import pytest

# Tests never touch the network: no hub downloads, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: without it they are skipped, and that is the only reason to skip."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_configure(config):
    # Tiny test models are dominated by per-op overhead: one intra-op thread is faster
    # than two, and stays fast when other processes (servers under test) share the cores.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """Path of a 2-layer, 64-wide Llama with a BPE tokenizer trained on the finance data."""
    pytest.importorskip("torch")
    from quantgrid.ml.models import build_tiny_base

    return str(build_tiny_base(tmp_path_factory.mktemp("bases") / "tiny-test", size="test", seed=0))


@pytest.fixture(scope="session")
def tiny_family_base(tmp_path_factory, tiny_base):
    """Builder of the test-size tiny base of a family (see quantgrid.ml.tiny.TINY_FAMILIES),
    each built once per session; "llama" is ``tiny_base`` itself."""
    pytest.importorskip("torch")
    from quantgrid.ml.tiny import build_tiny_base

    built: dict[str, str] = {"llama": tiny_base}

    def build(family: str) -> str:
        if family not in built:
            built[family] = str(build_tiny_base(tmp_path_factory.mktemp("bases") / f"tiny-{family}", size="test",
                                                seed=0, family=family))
        return built[family]

    return build
