"""Merged Hugging Face export and the Ollama Modelfile."""

from __future__ import annotations

import pytest

from quantgrid.data.modelfile import GO_TEMPLATES
from quantgrid.errors import ExportError
from quantgrid.export.merged import export_merged
from quantgrid.export.ollama import modelfile_for
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


def _training_prompt(template: str, tokenizer, question: str, history=(), system=None) -> str:
    from quantgrid.data.prompts import render
    from quantgrid.data.types import Example

    meta = {"history": list(history)} if history else {}
    prompt, _ = render(Example(prompt=question, completion="x", meta=meta),
                       "qa" if template == "context_qa" else template, tokenizer=tokenizer, system_prompt=system)
    return prompt.removeprefix("<s>")  # llama.cpp adds the BOS token itself


@pytest.mark.parametrize("template", sorted(GO_TEMPLATES))
def test_go_template_renders_the_training_prompt(template, tiny_base):
    """With no system prompt, Ollama's template must produce the prompt the adapter was trained on."""
    from quantgrid.ml.models import load_tokenizer

    from .gotemplate import ollama_prompt

    question = "What is a bond's duration?"
    expected = _training_prompt(template, load_tokenizer(tiny_base), question)
    assert ollama_prompt(GO_TEMPLATES[template], [{"role": "user", "content": question}]) == expected


@pytest.mark.parametrize("template", sorted(GO_TEMPLATES))
def test_go_template_renders_a_two_turn_conversation_as_training_does(template, tiny_base):
    """The earlier answer comes back through the template ({{ .Response }} or .Messages), and
    the whole prompt of the second turn is the text training renders for that history."""
    from quantgrid.ml.models import load_tokenizer

    from .gotemplate import ollama_prompt

    tok = load_tokenizer(tiny_base)
    history = [{"role": "user", "content": "What is a coupon?"},
               {"role": "assistant", "content": "The interest a bond pays."}]
    question = "And its yield?"
    system = "You are terse." if template in ("mistral", "chat") else None
    expected = _training_prompt(template, tok, question, history, system)
    got = ollama_prompt(GO_TEMPLATES[template], history + [{"role": "user", "content": question}], system=system)
    assert got == expected
    assert "The interest a bond pays." in got
    if template != "alpaca":
        assert "{{ .Response }}" in GO_TEMPLATES[template]


def test_modelfile_stop_words_come_from_the_base_tokenizer(tiny_base):
    from types import SimpleNamespace

    from quantgrid.ml.models import load_tokenizer

    text = modelfile_for(Recipe(prompt_template="qa"), from_="b.gguf", adapter=None,
                         tokenizer=load_tokenizer(tiny_base)).render()
    assert 'PARAMETER stop "</s>"' in text and 'PARAMETER stop "\\nQuestion:"' in text
    other = SimpleNamespace(eos_token="<|im_end|>", chat_template=None)
    text = modelfile_for(Recipe(prompt_template="mistral"), from_="b.gguf", adapter=None, tokenizer=other).render()
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "[INST]"' in text and "</s>" not in text


def test_modelfile_system_temperature_and_num_ctx_are_settable():
    from quantgrid.export.ollama import ModelfileSettings

    s = ModelfileSettings(system="Cite the filing.", temperature=0.7, num_ctx=4096)
    text = modelfile_for(Recipe(prompt_template="qa"), from_="b.gguf", adapter=None, settings=s).render()
    assert 'SYSTEM """Cite the filing."""' in text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER num_ctx 4096" in text
    mistral = modelfile_for(Recipe(prompt_template="mistral"), from_="b.gguf", adapter=None).render()
    assert f'SYSTEM """{Recipe().system_prompt}"""' in mistral  # the recipe's, for a template trained with it


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
    text = (tmp_path / "ollama" / "Modelfile").read_text()
    assert "PARAMETER temperature 0.2" in text and "SYSTEM" not in text  # the qa recipe has no system prompt
    res = CliRunner().invoke(app, ["export", "ollama", "--adapter", random_adapter, "--base", tiny_base,
                                   "--out", str(tmp_path / "o2"), "--from", "llama3", "--system", "Answer briefly.",
                                   "--temperature", "0.7", "--num-ctx", "512"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "o2" / "Modelfile").read_text()
    assert 'SYSTEM """Answer briefly."""' in text or "SYSTEM Answer briefly." in text, text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER num_ctx 512" in text


def test_cli_gguf_needs_something_to_export(tmp_path):
    from typer.testing import CliRunner

    from quantgrid.cli import app

    res = CliRunner().invoke(app, ["export", "gguf", "--out", str(tmp_path / "x.gguf")])
    assert res.exit_code == 2
    assert "nothing to export" in res.output
