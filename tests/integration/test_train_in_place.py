"""Training into the contributor's own folder (the LocoLLM layout), per-run seeds, and
best-checkpoint selection on the held-out loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from quantgrid.cli import app  # noqa: E402

runner = CliRunner()
USER_LOG = "# Data sources\n\nSEC 10-K excerpts I labelled by hand, 2019-2023.\n"


@pytest.fixture(scope="module")
def records():
    from quantgrid.data import load_examples

    return load_examples("builtin:finance-train")[:40]


@pytest.fixture()
def locollm(tmp_path, records) -> Path:
    """adapters/your-domain/ with the user's data, benchmark and notes, before any training."""
    from quantgrid.data import write_records

    d = tmp_path / "adapters" / "your-domain"
    write_records(d / "training" / "dataset.jsonl", records[:30])
    write_records(d / "eval" / "benchmark.jsonl", records[30:])
    (d / "training" / "TRAINING_LOG.md").write_text(USER_LOG)
    (d / "notes.md").write_text("ideas for v2")
    return d


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _train(base: str, out: Path, dataset: Path, *extra: str):
    result = runner.invoke(app, ["train", "--base-model", base, "--output", f"{out}/", "--dataset", str(dataset),
                                 "--max-steps", "2", "--batch-size", "4", "--grad-accum", "1", "--progress", "plain",
                                 *extra])
    assert result.exit_code == 0, result.output
    return result


def test_locollm_command_trains_in_place_and_keeps_the_users_files(tiny_base, locollm):
    from quantgrid.adapter import is_adapter_dir, read_manifest
    from quantgrid.utils import sha256_file

    before = _snapshot(locollm)
    result = _train(tiny_base, locollm, locollm / "training" / "dataset.jsonl")
    assert "keeps 3 other file(s)" in result.output
    after = _snapshot(locollm)
    for name in ("training/dataset.jsonl", "eval/benchmark.jsonl", "notes.md"):
        assert after[name] == before[name], name
    assert is_adapter_dir(locollm)
    m = read_manifest(locollm)
    assert all(sha256_file(locollm / f) == h for f, h in m.files.items())
    assert "training/dataset.jsonl" not in m.files and "eval/benchmark.jsonl" not in m.files
    log = (locollm / "training" / "TRAINING_LOG.md").read_text()
    assert log.startswith(USER_LOG.rstrip()) and "| step | train loss |" in log  # the user's notes, then ours
    assert not [p for p in locollm.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_retraining_keeps_eval_and_replaces_only_training_files(tiny_base, locollm):
    data = locollm / "training" / "dataset.jsonl"
    _train(tiny_base, locollm, data, "--seed", "1")
    # what `quantgrid eval` leaves in the adapter
    (locollm / "eval" / "results.json").write_text('{"benchmark": "eval/benchmark.jsonl"}\n')
    (locollm / "eval" / "REPORT.md").write_text("# report\n")
    before = _snapshot(locollm)
    result = _train(tiny_base, locollm, data, "--seed", "2", "--include-dataset")
    after = _snapshot(locollm)
    assert "eval/ is kept, but its results are for the previous adapter" in result.output
    for name in ("eval/results.json", "eval/REPORT.md", "eval/benchmark.jsonl", "notes.md",
                 "training/dataset.jsonl"):  # --include-dataset: the data already is the copy
        assert after[name] == before[name], name
    assert after["adapter_model.safetensors"] != before["adapter_model.safetensors"]
    assert set(after) == set(before)
    log = after["training/TRAINING_LOG.md"].decode()
    assert log.count("# Training log") == 1 and log.count("Data sources") == 1 and "seed 2" in log


def test_overwrite_never_deletes_the_directory(tiny_base, locollm):
    data = locollm / "training" / "dataset.jsonl"
    _train(tiny_base, locollm, data)
    (locollm / "README.md").write_text("my card")  # the card training wrote, edited by hand
    record = json.loads((locollm / ".quantgrid-train.json").read_text())
    assert "README.md" in record["files"]  # training wrote that path, so a new run may replace it
    _train(tiny_base, locollm, data, "--overwrite")
    assert (locollm / "notes.md").read_text() == "ideas for v2"
    assert (locollm / "eval" / "benchmark.jsonl").is_file() and data.is_file()
    assert (locollm / "README.md").read_text().startswith("---\n")


def test_a_failure_while_writing_leaves_the_directory_as_it_was(tiny_base, locollm, monkeypatch):
    import quantgrid.ml.training_log as training_log

    data = locollm / "training" / "dataset.jsonl"
    _train(tiny_base, locollm, data)
    before = _snapshot(locollm)

    def broken(state, path):
        raise OSError("disk full")

    monkeypatch.setattr(training_log, "plot_losses", broken)
    result = runner.invoke(app, ["train", "--base-model", tiny_base, "--output", str(locollm), "--dataset", str(data),
                                 "--max-steps", "1", "--progress", "none"])
    assert result.exit_code != 0
    assert _snapshot(locollm) == before  # the old adapter and the user's files, byte for byte
    assert not [p for p in locollm.parent.iterdir() if p.name.startswith(".")]


def _lora(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter_model.safetensors"))


def test_each_run_draws_its_own_seed_and_records_it(tiny_base, locollm, tmp_path):
    import yaml

    from quantgrid.adapter import read_manifest

    data = locollm / "training" / "dataset.jsonl"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (a, b):
        _train(tiny_base, out, data, "--max-steps", "1")
    wa, wb = _lora(a), _lora(b)
    lora_a = [k for k in wa if ".lora_A." in k]
    assert lora_a and all(not torch.equal(wa[k], wb[k]) for k in lora_a)  # independent initialisations
    seed = yaml.safe_load((a / "training" / "train_config.yaml").read_text())["recipe"]["training"]["seed"]
    assert read_manifest(a).recipe["training"]["seed"] == seed
    assert f"pass --seed {seed} to repeat it" in (a / "training" / "TRAINING_LOG.md").read_text()
    # the recorded seed reproduces the run exactly
    _train(tiny_base, c, data, "--max-steps", "1", "--seed", str(seed))
    wc = _lora(c)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_best_checkpoint_on_held_out_loss(tiny_base, records, tmp_path):
    """eval_steps=2 over 12 constant-rate steps; the lowest held-out loss is not the last one here,
    and the written weights are exactly that step's (a run stopped there gives the same tensors)."""
    from quantgrid.data import write_records
    from quantgrid.ml.trainer import QuantGridTrainer

    data = write_records(tmp_path / "train.jsonl", records)
    common = dict(batch_size=4, grad_accum=1, lr=0.01, schedule="constant", warmup_ratio=0, eval_fraction=0.2,
                  seed=3, progress="none")
    t = QuantGridTrainer(base_model=tiny_base)
    best = t.train(data, tmp_path / "best", max_steps=12, eval_steps=2, load_best_model_at_end=True, **common)
    s = t.last_stats
    assert s["eval_steps"] == [0, 2, 4, 6, 8, 10, 12]
    trained = {st: loss for st, loss in zip(s["eval_steps"], s["eval_losses"], strict=True) if st > 0}
    kept = min(trained, key=trained.get)
    assert s["kept_step"] == kept != 12
    log = (best / "training" / "TRAINING_LOG.md").read_text()
    assert f"Kept weights: step {kept} " in log and "every 2 steps" in log

    t.train(data, tmp_path / "stopped", max_steps=kept, **common)
    wb, ws = _lora(best), _lora(tmp_path / "stopped")
    assert all(torch.allclose(wb[k], ws[k], atol=1e-6) for k in wb)


def test_best_checkpoint_needs_held_out_data(tiny_base, records, tmp_path):
    from quantgrid.data import write_records

    data = write_records(tmp_path / "train.jsonl", records[:8])  # under 10 examples: nothing is held out
    result = runner.invoke(app, ["train", "--base-model", tiny_base, "--output", str(tmp_path / "o"), "--dataset",
                                 str(data), "--config", str(_yaml(tmp_path, load_best_model_at_end=True)),
                                 "--progress", "none"])
    assert result.exit_code == 2, result.output
    assert "needs held-out data" in result.output and "--eval-dataset" in result.output
    assert not (tmp_path / "o").exists()


def _yaml(tmp_path: Path, **values) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(json.dumps(values))
    return p
