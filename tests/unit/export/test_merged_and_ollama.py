"""Merged Hugging Face export and the Ollama Modelfile."""

from __future__ import annotations

import pytest

from quantgrid.errors import ExportError
from quantgrid.export.merged import export_merged
from quantgrid.export.ollama import GO_TEMPLATES, modelfile_for
from quantgrid.recipe import Recipe


def test_merged_model_equals_base_plus_adapter(tiny_base, random_adapter, reference, tmp_path):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    out = export_merged(random_adapter, tmp_path / "merged", tiny_base)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        logits = merged(torch.tensor([reference["ids"]])).logits[0].numpy()
    assert np.abs(logits - reference["adapter"]).max() < 1e-4
    assert (out / "tokenizer.json").is_file() and (out / "quantgrid_export.json").is_file()


def test_merged_refuses_existing_output(tiny_base, random_adapter, tmp_path):
    (tmp_path / "merged").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_merged(random_adapter, tmp_path / "merged", tiny_base)


def test_modelfile_has_every_directive():
    text = modelfile_for(Recipe(prompt_template="mistral"), from_="./base.gguf", adapter="./adapter.gguf").render()
    lines = text.splitlines()
    assert lines[0] == "FROM ./base.gguf" and lines[1] == "ADAPTER ./adapter.gguf"
    assert 'TEMPLATE """' in text and "[INST] {{ if .System }}" in text
    assert text.count('SYSTEM """') == 1
    for param in ("temperature", "top_p", "num_ctx 1024", 'stop "</s>"'):
        assert f"PARAMETER {param}" in text


@pytest.mark.parametrize("template", sorted(GO_TEMPLATES))
def test_go_template_renders_the_training_prompt(template, tiny_base):
    """With no system prompt, Ollama's template must produce the prompt the adapter was trained on."""
    import re

    from quantgrid.data.prompts import render
    from quantgrid.data.types import Example
    from quantgrid.ml.models import load_tokenizer

    question = "What is a bond's duration?"
    expected, _ = render(Example(prompt=question, completion="x"), "qa" if template == "context_qa" else template,
                         tokenizer=load_tokenizer(tiny_base), system_prompt=None)
    go = GO_TEMPLATES[template]
    # evaluate the tiny Go-template subset we use, with .System empty and one user message
    go = re.sub(r"\{\{ if \.System \}\}.*?\{\{ end \}\}", "", go, flags=re.S)
    go = re.sub(r"\{\{ range \.Messages \}\}(.*?)\{\{ end \}\}",
                lambda m: m.group(1).replace("{{ .Role }}", "user").replace("{{ .Content }}", question), go,
                flags=re.S)
    go = go.replace("{{ .Prompt }}", question)
    assert go == expected.removeprefix("<s>")


def test_qa_modelfile_has_no_system_line_since_training_had_none():
    text = modelfile_for(Recipe(prompt_template="qa"), from_="b.gguf", adapter=None).render()
    assert "SYSTEM" not in text and "ADAPTER" not in text and "Question: {{ .Prompt }}" in text


def test_cli_ollama_export_prints_create_command(tiny_base, random_adapter, tmp_path):
    from typer.testing import CliRunner

    from quantgrid.cli import app

    res = CliRunner().invoke(app, ["export", "ollama", "--adapter", random_adapter, "--base", tiny_base,
                                   "--out", str(tmp_path / "ollama"), "--name", "fin"])
    assert res.exit_code == 0, res.output
    assert "ollama create fin -f Modelfile" in res.output
    assert {p.name for p in (tmp_path / "ollama").iterdir()} == {"Modelfile", "adapter.gguf", "base.gguf"}


def test_cli_gguf_needs_something_to_export(tmp_path):
    from typer.testing import CliRunner

    from quantgrid.cli import app

    res = CliRunner().invoke(app, ["export", "gguf", "--out", str(tmp_path / "x.gguf")])
    assert res.exit_code == 2
    assert "nothing to export" in res.output
