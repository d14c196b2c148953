"""Checkpoints and --resume: a run stopped midway and resumed ends with the same adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from quantgrid.errors import ConfigError  # noqa: E402

SETTINGS = dict(max_steps=8, batch_size=2, grad_accum=2, lr=3e-3, save_steps=2, eval_fraction=0.1,
                progress="none")




@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    from quantgrid.data import load_examples, write_records

    # 26 examples: 3 held out, 23 train -> 12 micro-batches -> 6 steps per epoch, so
    # 8 steps cross an epoch boundary (epoch-end eval and checkpoint included).
    return write_records(tmp_path_factory.mktemp("data") / "train.jsonl", load_examples("builtin:finance-train")[:26])


def _interrupt_at(step: int):
    def hook(state):
        if state.step == step:
            raise KeyboardInterrupt
    return hook


def test_interrupted_and_resumed_run_equals_straight_run(tiny_base, small_data, tmp_path):
    from quantgrid.ml.checkpoint import checkpoints_dir, list_checkpoints
    from quantgrid.ml.trainer import QuantGridTrainer, TrainingInterrupted

    straight = QuantGridTrainer(base_model=tiny_base)
    a = straight.train(small_data, tmp_path / "straight", seed=7, **SETTINGS)

    out = tmp_path / "resumed"
    t = QuantGridTrainer(base_model=tiny_base)
    with pytest.raises(TrainingInterrupted) as e:
        t.train(small_data, out, on_step=_interrupt_at(3), seed=7, **SETTINGS)
    assert "--resume" in e.value.hint and "step 3" in str(e.value)
    assert not out.exists()  # no half-written adapter
    assert [p.name for p in list_checkpoints(checkpoints_dir(out))] == ["step-000002", "step-000003"]

    b = t.train(small_data, out, resume=True, **SETTINGS)  # no seed: the interrupted run's is used
    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    assert any(wa[k].abs().max() > 0 for k in wa if "lora_B" in k)  # it did train
    sa, sb = straight.last_stats, t.last_stats
    assert sb["steps"] == sa["steps"] == 8 and sb["tokens"] == sa["tokens"]
    assert sb["eval_losses"] == pytest.approx(sa["eval_losses"], abs=1e-5)
    assert not checkpoints_dir(out).exists()  # removed once the adapter is written


def _interrupted_run(base: str, data: Path, out: Path):
    """The trainer of a run into ``out`` stopped by Ctrl-C at step 1, its checkpoint left behind."""
    from quantgrid.ml.trainer import QuantGridTrainer, TrainingInterrupted

    t = QuantGridTrainer(base_model=base)
    with pytest.raises(TrainingInterrupted):
        t.train(data, out, on_step=_interrupt_at(1), **SETTINGS)
    return t


def test_resume_refuses_a_checkpoint_from_another_run(tiny_base, small_data, tmp_path):
    out = tmp_path / "run"
    t = _interrupted_run(tiny_base, small_data, out)
    with pytest.raises(ConfigError, match="different run") as e:
        t.train(small_data, out, resume=True, **{**SETTINGS, "lora_rank": 4})
    assert "recipe_hash" in str(e.value)


def test_a_fresh_run_does_not_silently_drop_an_unfinished_one(tiny_base, small_data, tmp_path):
    from quantgrid.ml.checkpoint import checkpoints_dir, list_checkpoints

    out = tmp_path / "run"
    t = _interrupted_run(tiny_base, small_data, out)
    with pytest.raises(ConfigError, match="unfinished run") as e:
        t.train(small_data, out, **SETTINGS)
    assert "--resume" in e.value.hint and "--overwrite" in e.value.hint
    assert [p.name for p in list_checkpoints(checkpoints_dir(out))] == ["step-000001"]


def test_resume_without_a_checkpoint_says_so(tiny_base, small_data, tmp_path):
    from quantgrid.ml.trainer import QuantGridTrainer

    with pytest.raises(ConfigError, match="no checkpoint found"):
        QuantGridTrainer(base_model=tiny_base).train(small_data, tmp_path / "x", resume=True, **SETTINGS)


def test_ctrl_c_in_the_cli_prints_the_resume_command(tiny_base, small_data, tmp_path, monkeypatch):
    import quantgrid.ml.batching as batching
    from quantgrid.cli import app

    real = batching.loss_sum
    calls = {"n": 0}

    def interrupting(model, batch, **kw):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 5:  # mid-way through step 3 (2 micro-batches per step)
                raise KeyboardInterrupt
        return real(model, batch, **kw)

    monkeypatch.setattr(batching, "loss_sum", interrupting)
    out = tmp_path / "cli"
    args = ["train", "--base-model", tiny_base, "--dataset", str(small_data), "--output", str(out), "--max-steps",
            "8", "--batch-size", "2", "--grad-accum", "2", "--progress", "none"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "step 2" in result.output
    assert "--resume" in result.output and "resume with: quantgrid train" in result.output
    assert not out.exists()


def test_early_stopping_and_the_schedule(tiny_base, small_data, tmp_path):
    from quantgrid.ml.trainer import QuantGridTrainer

    t = QuantGridTrainer(base_model=tiny_base)
    # A learning rate too small to move the eval loss: every epoch is "no improvement".
    t.train(small_data, tmp_path / "es", num_epochs=5, batch_size=4, grad_accum=1, lr=1e-9, warmup_ratio=0.2,
            early_stopping_patience=2, eval_fraction=0.1, progress="none")
    s = t.last_stats
    assert s["stopped"].startswith("early stopping")
    assert s["steps"] == 2 * 6  # 23 train examples / 4 -> 6 steps per epoch; stopped after epoch 2 of 5
    assert len(s["eval_losses"]) == 3  # before training + two epochs
    lrs = s["lrs"]
    warmup = 6  # ceil(0.2 * 30 planned steps)
    assert lrs[:warmup] == sorted(lrs[:warmup]) and lrs[warmup] == pytest.approx(1e-9)
    assert lrs[warmup:] == sorted(lrs[warmup:], reverse=True)  # cosine decay
