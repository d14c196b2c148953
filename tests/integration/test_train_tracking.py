"""--report-to: the terminal's numbers in TensorBoard event files and an offline W&B run,
read back with each tool's own reader."""

from __future__ import annotations

import glob
import struct
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SETTINGS = dict(max_steps=4, batch_size=4, grad_accum=1, eval_steps=2, eval_fraction=0.2, seed=5, progress="none")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from quantgrid.data import load_examples, write_records

    return write_records(tmp_path_factory.mktemp("data") / "train.jsonl", load_examples("builtin:finance-train")[:30])


def _train(tiny_base, data, out, **kw):
    from quantgrid.ml.trainer import QuantGridTrainer

    t = QuantGridTrainer(base_model=tiny_base)
    t.train(data, out, **SETTINGS, **kw)
    return t.last_stats


def test_tensorboard_event_files_hold_the_runs_numbers(tiny_base, data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "adapter"
    stats = _train(tiny_base, data, out, report_to="tensorboard", run_name="first")
    run_dir = out / "training" / "runs" / "first"
    assert glob.glob(str(run_dir / "events.out.tfevents.*"))
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    assert {"train/loss", "train/learning_rate", "train/tokens_per_second", "eval/loss"} <= set(ea.Tags()["scalars"])
    train = ea.Scalars("train/loss")
    assert [e.step for e in train] == [1, 2, 3, 4]
    assert [e.value for e in train] == pytest.approx(stats["train_losses"], rel=1e-6)
    assert [e.value for e in ea.Scalars("train/learning_rate")] == pytest.approx(stats["lrs"], rel=1e-6, abs=1e-12)
    ev = ea.Scalars("eval/loss")
    assert [e.step for e in ev] == stats["eval_steps"] == [0, 2, 4]
    assert [e.value for e in ev] == pytest.approx(stats["eval_losses"], rel=1e-6)
    assert all(e.value > 0 for e in ea.Scalars("train/tokens_per_second"))
    # the logs are not part of the adapter's manifest or of a submission
    from quantgrid.adapter import read_manifest, submission_files

    assert not [f for f in read_manifest(out).files if f.startswith("training/runs/")]
    assert not [f for f in submission_files(out)[0] if f.startswith("training/runs/")]


def test_unknown_tracker_is_refused_before_training(tiny_base, data, tmp_path):
    from quantgrid.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'") as e:
        _train(tiny_base, data, tmp_path / "x", report_to="tensorboard,mlflow")
    assert "tensorboard" in e.value.hint
    assert not (tmp_path / "x").exists()


def _wandb_history(run_dir: str) -> list[dict[str, str]]:
    """The history records of an offline run's ``.wandb`` file.

    wandb 0.31 has no Python reader for that file (its reader lives in the Go core), so
    this follows its documented layout: a 7-byte header, then LevelDB-log records
    (crc32, length, type: full/first/middle/last) in 32 KiB blocks, each a protobuf
    ``Record`` from wandb's own ``wandb_internal_pb2``.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    raw = Path(glob.glob(f"{run_dir}/*.wandb")[0]).read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, chunks, pending = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        body, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(body)
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        else:
            chunks.append(pending + body)
    history = []
    for c in chunks:
        rec = pb.Record()
        rec.ParseFromString(c)
        if rec.WhichOneof("record_type") == "history":
            history.append({i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item})
    return history


@pytest.mark.slow  # wandb's service process takes ~20 s to start and stop
def test_wandb_offline_run_with_no_account(tiny_base, data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials either
    out = tmp_path / "adapter"
    stats = _train(tiny_base, data, out, report_to="wandb", run_name="offline")
    runs = glob.glob(str(out / "training" / "runs" / "offline" / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    history = _wandb_history(runs[0])
    train = [(int(h["_step"]), float(h["train/loss"])) for h in history if "train/loss" in h]
    assert [s for s, _ in train] == [1, 2, 3, 4]
    assert [v for _, v in train] == pytest.approx(stats["train_losses"], rel=1e-6)
    evals = [(int(h["_step"]), float(h["eval/loss"])) for h in history if "eval/loss" in h]
    assert [s for s, _ in evals] == [0, 2, 4]
    assert [v for _, v in evals] == pytest.approx(stats["eval_losses"], rel=1e-6)
