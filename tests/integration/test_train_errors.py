"""Every bad input to `quantgrid train` gets one clear message and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from quantgrid.cli import app  # noqa: E402


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    from quantgrid.data import load_examples, write_records

    return write_records(tmp_path_factory.mktemp("data") / "train.jsonl", load_examples("builtin:finance-train")[:30])


def _train(tmp_path: Path, base: str, data: Path | str, *extra: str):
    before = set(tmp_path.iterdir())
    result = CliRunner().invoke(app, ["train", "--base-model", base, "--dataset", str(data), "--output",
                                      str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "2",
                                      "--progress", "none", *extra])
    created = set(tmp_path.iterdir()) - before
    return result, created


def _assert_clear_error(result, *needles: str, code: int = 1) -> None:
    """``code``: 2 for a usage error (a flag or setting), 1 for a runtime error."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output and "hint:" in result.output
    for n in needles:
        assert n in result.output, result.output


def test_missing_dataset(tiny_base, tmp_path):
    result, created = _train(tmp_path, tiny_base, tmp_path / "nope.jsonl")
    _assert_clear_error(result, "nope.jsonl", "no such file")
    assert not created


def test_unknown_base_model_path(data_file, tmp_path):
    result, created = _train(tmp_path, str(tmp_path / "no-such-model"), data_file)
    _assert_clear_error(result, "no-such-model", "not a model directory")
    assert not created


def test_dataset_empty_after_filtering(tiny_base, data_file, tmp_path):
    # every training example is also in the eval set: the leakage filter removes them all
    result, created = _train(tmp_path, tiny_base, data_file, "--eval-dataset", str(data_file))
    _assert_clear_error(result, "dataset empty after filtering", "all 30 examples")
    assert not created


def test_max_seq_length_shorter_than_the_prompts(tiny_base, data_file, tmp_path):
    result, created = _train(tmp_path, tiny_base, data_file, "--max-seq-length", "16")
    _assert_clear_error(result, "max_seq_length 16 is shorter than the prompts", "--max-seq-length")
    assert not created


def test_output_dir_with_a_file_training_did_not_write_at_one_of_its_paths(tiny_base, data_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    (out / "README.md").write_text("my own notes")  # training writes a model card here
    result, _ = _train(tmp_path, tiny_base, data_file)
    _assert_clear_error(result, "README.md", "which training did not write", "--overwrite", code=2)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "thesis.docx"]
    assert (out / "README.md").read_text() == "my own notes"
    assert not (tmp_path / "out.checkpoints").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # --overwrite replaces exactly the files training writes, nothing else
    result, _ = _train(tmp_path, tiny_base, data_file, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "thesis.docx").read_text() == "precious"
    assert (out / "README.md").read_text().startswith("---\n")  # now the model card


def test_invalid_flag_value_names_the_flag(tiny_base, data_file, tmp_path):
    result, created = _train(tmp_path, tiny_base, data_file, "--lora-rank", "0")
    _assert_clear_error(result, "--lora-rank", code=2)
    assert not created


def test_unsloth_backend_without_unsloth(tiny_base, data_file, tmp_path):
    from quantgrid.ml.trainer import unsloth_available

    if unsloth_available():
        pytest.skip("Unsloth is installed here")
    result, created = _train(tmp_path, tiny_base, data_file, "--backend", "unsloth")
    _assert_clear_error(result, "Unsloth is not installed", "--backend hf", code=2)
    assert not created


def test_out_of_memory_suggests_a_smaller_batch(tiny_base, data_file, tmp_path, monkeypatch):
    import quantgrid.ml.batching as batching

    def oom(model, batch, **kw):
        if model.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batching.__dict__["_real_loss_sum"](model, batch, **kw)

    monkeypatch.setitem(batching.__dict__, "_real_loss_sum", batching.loss_sum)
    monkeypatch.setattr(batching, "loss_sum", oom)
    result, created = _train(tmp_path, tiny_base, data_file, "--batch-size", "4")
    _assert_clear_error(result, "out of memory", "--batch-size 2 --grad-accum 8", "4-bit")
    assert not created


def test_config_file_values_and_flag_precedence(tiny_base, data_file, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(json.dumps({"dataset": str(data_file), "lora_rank": 0}))  # JSON is YAML
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--base-model", tiny_base,
                                      "--output", str(tmp_path / "o")])
    _assert_clear_error(result, "--lora-rank", code=2)  # the file's bad value is reported under its flag
