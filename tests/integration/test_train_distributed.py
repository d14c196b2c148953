"""`quantgrid train` under torchrun: two data-parallel processes (gloo on CPU) give one adapter
whose loss curve and weights match the single-process run for the same global batch."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ARGS = ["--max-steps", "6", "--batch-size", "2", "--grad-accum", "4", "--seed", "11", "--lora-dropout", "0",
        "--progress", "plain", "--log-every", "1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _curve(out: Path) -> list[tuple[int, float]]:
    rows = re.findall(r"^\| (\d+) \| ([0-9.]+) \|", (out / "training" / "TRAINING_LOG.md").read_text(), re.M)
    return [(int(s), float(v)) for s, v in rows]


@pytest.mark.slow  # two torch processes start and train: about a minute on two cores
def test_torchrun_two_processes_match_one(tiny_base, tmp_path):
    from safetensors.torch import load_file

    from quantgrid.data import load_examples, write_records

    data = write_records(tmp_path / "train.jsonl", load_examples("builtin:finance-train")[:40])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MASTER_ADDR": "127.0.0.1"}
    train = ["-m", "quantgrid.cli", "train", "--base-model", tiny_base, "--dataset", str(data)]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, *train, "--output", str(one), *ARGS], env=env, capture_output=True,
                        text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                         "127.0.0.1", "--master-port", str(_free_port()), *train, "--output", str(two), *ARGS],
                        env=env, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    out2 = r2.stdout + r2.stderr
    assert "data-parallel: 2 processes" in out2
    assert out2.count("Adapter saved to") == 1  # rank 0 alone writes and reports
    c1, c2 = _curve(one), _curve(two)
    assert [s for s, _ in c1] == [s for s, _ in c2] == list(range(1, 7))
    assert [v for _, v in c2] == pytest.approx([v for _, v in c1], abs=1e-3)  # the log rounds to 4 decimals
    w1, w2 = load_file(str(one / "adapter_model.safetensors")), load_file(str(two / "adapter_model.safetensors"))
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
