"""ML unit tests run torch on one thread: on a small shared CPU, OpenMP threads that
spin-wait for each other make tiny models many times slower, not faster."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
