"""`quantgrid train` end to end on the tiny base with the built-in finance data (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from quantgrid.cli import app  # noqa: E402

runner = CliRunner()
EXPECTED_FILES = {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json", "README.md",
                  "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                  "training/train_config.yaml", "training/TRAINING_LOG.md", "training/loss.png"}
RECORD = ".quantgrid-train.json"  # the hidden list of files training wrote (never packaged)


def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.name != RECORD}



@pytest.fixture(scope="module")
def finance_files(tmp_path_factory) -> tuple[Path, Path]:
    """A slice of the built-in training set and of the held-out dev set, as user files."""
    from quantgrid.data import load_examples, write_records

    d = tmp_path_factory.mktemp("data")
    train = write_records(d / "train.jsonl", load_examples("builtin:finance-train")[:120])
    dev = write_records(d / "dev.jsonl", load_examples("builtin:finance-dev")[:24])
    return train, dev


@pytest.fixture(scope="module")
def trained(tiny_base, finance_files, tmp_path_factory) -> tuple[Path, object]:
    train, _ = finance_files
    out = tmp_path_factory.mktemp("run") / "my_sec_adapter"
    result = runner.invoke(app, ["train", "--base-model", tiny_base, "--dataset", str(train), "--output", str(out),
                                 "--max-steps", "12", "--batch-size", "4", "--grad-accum", "1", "--lr", "3e-3",
                                 "--save-steps", "5", "--progress", "plain", "--author", "Ada"])
    assert result.exit_code == 0, result.output
    return out, result


def _completion_loss(model, tok, examples) -> float:
    from quantgrid.ml.batching import loss_sum, pack
    from quantgrid.ml.tokenize import encode

    enc = [encode(tok, ex, "qa", 1024) for ex in examples]
    total = n = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(enc), 8):
            b = pack(enc[i:i + 8])
            total += loss_sum(model, b).item()
            n += b.n_loss_tokens
    return total / n


def test_cli_writes_exactly_the_adapter_files(trained):
    out, result = trained
    assert "Adapter saved to" in result.output and out.name in result.output
    assert _files(out) == EXPECTED_FILES  # no dataset, no checkpoints, no full model; a model card
    assert set(json.loads((out / RECORD).read_text())["files"]) == EXPECTED_FILES
    assert not out.with_name(out.name + ".checkpoints").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_weights_are_the_adapter_only(trained, tiny_base):
    from safetensors import safe_open

    out, _ = trained
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    # 2 layers x 4 projections x (A, B)
    assert len(keys) == 16
    base_bytes = sum(p.stat().st_size for p in Path(tiny_base).glob("*.safetensors"))
    assert (out / "adapter_model.safetensors").stat().st_size < base_bytes / 2


def test_manifest_and_config_record_the_run(trained, tiny_base):
    from quantgrid.adapter import read_manifest
    from quantgrid.ml.models import base_info
    from quantgrid.utils import sha256_file

    out, _ = trained
    m = read_manifest(out)
    info = base_info(tiny_base)
    assert m.base_model.name == info.name == "quantgrid-tiny-test"
    assert m.base_model.fingerprint == info.fingerprint
    assert m.non_standard == [] and m.author == "Ada"
    assert m.dataset.fingerprint["n_examples"] > 100 and "sha256" in m.dataset.fingerprint
    assert set(m.files) == EXPECTED_FILES - {"quantgrid.json"}
    assert all(sha256_file(out / f) == h for f, h in m.files.items())
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32
    assert cfg["base_model_name_or_path"] == "quantgrid-tiny-test"  # not this machine's path
    import yaml

    saved = yaml.safe_load((out / "training/train_config.yaml").read_text())
    assert saved["run"]["max_steps"] == 12 and saved["recipe"]["training"]["lr"] == 3e-3
    assert m.recipe_hash == __import__("quantgrid.recipe").recipe.Recipe.model_validate(saved["recipe"]).hash()
    log = (out / "training/TRAINING_LOG.md").read_text()
    for needle in ("## Data", "train.jsonl", "| step | train loss |", "Time taken", "Hardware", "rank 16"):
        assert needle in log
    assert (out / "training/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapter_beats_the_base_on_held_out_data(trained, tiny_base, finance_files):
    from quantgrid.data import load_examples
    from quantgrid.ml.models import load_adapter, load_base

    out, _ = trained
    dev = load_examples(str(finance_files[1]))
    model, tok = load_base(tiny_base)
    base_loss = _completion_loss(model, tok, dev)
    adapted = load_adapter(model, out)
    assert _completion_loss(adapted, tok, dev) < base_loss - 0.05


def test_plain_peft_loads_the_adapter_with_the_same_logits(trained, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from quantgrid.ml.models import base_info, load_adapter, load_base

    out, _ = trained
    ours, tok = load_base(tiny_base)
    ours = load_adapter(ours, out, base=base_info(tiny_base)).eval()
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(out)).eval()
    ids = tok("Question: What is the P/E ratio if price is 50 and EPS is 5?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = ours(input_ids=ids).logits, plain(input_ids=ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(tiny_base)(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base_logits, atol=1e-3)  # the adapter does change the model


def test_non_standard_rank_is_allowed_but_marked(tiny_base, finance_files, tmp_path):
    train, dev = finance_files
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not an adapter")
    result = runner.invoke(app, ["train", "--base-model", tiny_base, "--dataset", str(train), "--output", str(out),
                                 "--eval-dataset", str(dev), "--lora-rank", "8", "--max-steps", "1",
                                 "--batch-size", "2", "--include-dataset", "--progress", "none"])
    assert result.exit_code == 0, result.output
    assert "non-standard" in result.output and "lora.r" in result.output
    from quantgrid.adapter import read_manifest

    m = read_manifest(out)
    assert m.non_standard == ["lora.r"] and not m.standard
    assert _files(out) == EXPECTED_FILES | {"training/dataset.jsonl", "notes.txt"}  # the user's file is kept
    assert (out / "notes.txt").read_text() == "not an adapter"
    assert "training/dataset.jsonl" not in m.files  # raw data is never hashed into the manifest
    assert len((out / "training/dataset.jsonl").read_text().splitlines()) == 120
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_python_api_from_the_contributor_guide(tiny_base, finance_files, tmp_path, capsys):
    from quantgrid.ml.trainer import QuantGridTrainer

    trainer = QuantGridTrainer(base_model=tiny_base)
    out = trainer.train(dataset_path=str(finance_files[0]), output_dir=tmp_path / "my_sec_adapter", num_epochs=3,
                        batch_size=4, max_steps=2, progress="none")
    assert out == tmp_path / "my_sec_adapter"
    assert "Adapter saved to" in capsys.readouterr().out
    assert _files(out) == EXPECTED_FILES
    assert trainer.last_stats["steps"] == 2 and trainer.last_stats["tokens"] > 0


def test_hub_recipe_is_the_standard_and_keeps_its_hash(tiny_base, finance_files, tmp_path, monkeypatch):
    """--hub: train with the hub's recipe; the base given by path keeps the hub's recipe hash."""
    from quantgrid.adapter import read_manifest
    from quantgrid.hub import client
    from quantgrid.recipe import LoraSettings, Recipe

    hub_recipe = Recipe(base_model="quantgrid-tiny-test", lora=LoraSettings(r=8, alpha=16))
    monkeypatch.setattr(client.HubClient, "get_recipe", lambda self: hub_recipe)  # the network boundary
    out = tmp_path / "hub-run"
    result = runner.invoke(app, ["train", "--hub", "http://hub.example", "--base-model", tiny_base, "--dataset",
                                 str(finance_files[0]), "--output", str(out), "--max-steps", "1", "--seed",
                                 str(hub_recipe.training.seed), "--progress", "none"])  # the recipe is untouched
    assert result.exit_code == 0, result.output
    m = read_manifest(out)
    assert m.recipe_hash == hub_recipe.hash() and m.non_standard == []
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
