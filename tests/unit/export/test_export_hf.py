"""`quantgrid export hf`: a folder huggingface_hub can upload and PEFT can load, with no private data."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from quantgrid.cli import app  # noqa: E402


def test_export_hf_folder(tiny_base, tmp_path):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantgrid.data import load_examples, write_records

    records = load_examples("builtin:finance-train")[:30]
    adapter = tmp_path / "adapters" / "sec"
    data = write_records(adapter / "training" / "dataset.jsonl", records[:24])
    write_records(adapter / "eval" / "benchmark.jsonl", records[24:])
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--base-model", tiny_base, "--dataset", str(data), "--output", str(adapter),
                            "--max-steps", "1", "--progress", "none", "--description", "my filings Q&A",
                            "--license", "apache-2.0"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "hf"
    r = runner.invoke(app, ["export", "hf", "--adapter", str(adapter), "--repo-id", "ada/quantgrid-sec",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "huggingface-cli upload ada/quantgrid-sec" in r.output
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja"} <= names
    assert not {"training/dataset.jsonl", "eval/benchmark.jsonl", "quantgrid.json"} & names
    everything = b"".join((out / n).read_bytes() for n in names)
    assert str(tmp_path).encode() not in everything  # no local path
    assert records[25].prompt.encode() not in everything and records[0].prompt.encode() not in everything
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and card.data.license == "apache-2.0"
    assert "# quantgrid-sec" in card.text and "my filings Q&A" in card.text
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(out))
    assert model.peft_config["default"].r == 16
    assert AutoTokenizer.from_pretrained(str(out)).chat_template  # prompts like training

    bad = runner.invoke(app, ["export", "hf", "--adapter", str(adapter), "--repo-id", "no spaces//x",
                              "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "not a valid Hugging Face repo id" in bad.output
    again = runner.invoke(app, ["export", "hf", "--adapter", str(adapter), "--repo-id", "x", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
