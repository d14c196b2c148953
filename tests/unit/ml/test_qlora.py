"""QLoRA: the 4-bit NF4 path through bitsandbytes, tested on the CPU where bitsandbytes runs
4-bit there, and on CUDA (the `gpu` tests, skipped without a GPU)."""

from __future__ import annotations

import copy
import importlib.util
import platform
from pathlib import Path

import pytest
from _adapters import random_lora

from quantgrid.errors import ModelError

# Where the `ml` extra installs bitsandbytes (its environment marker in pyproject.toml).
BNB_EXPECTED = (platform.system() == "Linux" and platform.machine() == "x86_64") or platform.system() == "Windows"


@pytest.fixture(scope="module")
def bnb():
    if importlib.util.find_spec("bitsandbytes") is None:
        if BNB_EXPECTED:
            pytest.fail("bitsandbytes is missing, though `pip install quantgrid[ml]` installs it on this platform")
        pytest.skip("the ml extra does not install bitsandbytes on this platform")
    import bitsandbytes

    return bitsandbytes


def _lora_grads(model, recipe, ids):
    import torch

    from quantgrid.ml.models import attach_lora

    torch.manual_seed(0)
    peft_model = attach_lora(model, recipe)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    for mod in peft_model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    out = peft_model(input_ids=ids, labels=ids)
    out.loss.backward()
    return float(out.loss), {n: p.grad for n, p in peft_model.named_parameters() if p.grad is not None}


def test_4bit_lora_on_cpu_learns_what_the_dequantized_base_would(bnb, tiny_base):
    """NF4 base + LoRA: the loss and every LoRA gradient (including layer 0's, which flow back
    through the later 4-bit layers) match the same LoRA on the dequantized weights."""
    import torch

    from quantgrid.ml.models import four_bit_problem, load_base
    from quantgrid.recipe import Recipe

    assert four_bit_problem("cpu") is None
    model4, tok = load_base(tiny_base, load_in_4bit=True, device="cpu")
    assert type(model4.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    dequantized = copy.deepcopy(model4).dequantize()
    ids = torch.tensor([tok("Question: What is a covered call?\nAnswer: selling a call on a stock you own").input_ids])
    recipe = Recipe(base_model=tiny_base)
    loss4, g4 = _lora_grads(model4, recipe, ids)
    loss_d, gd = _lora_grads(dequantized, recipe, ids)
    assert loss4 == pytest.approx(loss_d, rel=1e-2)
    assert set(g4) == set(gd) and len(g4) == 4 * 2 * 2  # q/k/v/o x A/B x 2 layers
    for name in g4:
        assert float((g4[name] - gd[name]).norm() / gd[name].norm()) < 0.05, name


def test_cuda_without_4bit_support_is_an_error_not_bf16(tiny_base, monkeypatch):
    """On CUDA, QLoRA is the default: when 4-bit cannot load, say why instead of loading bf16."""
    from quantgrid.ml import models

    monkeypatch.setattr(models, "four_bit_problem", lambda device=None: "bitsandbytes is not installed")
    with pytest.raises(ModelError, match="4-bit .QLoRA. loading on cuda is not possible: bitsandbytes is not") as e:
        models.load_base(tiny_base, device="cuda")
    assert "quantgrid[ml]" in e.value.hint and "--no-4bit" in e.value.hint


def test_four_bit_problem_names_what_is_missing(monkeypatch):
    import torch

    from quantgrid.ml import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.four_bit_problem("cuda") == "no CUDA device is visible to torch"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("bitsandbytes") else real_find_spec(name, *a))
    assert models.four_bit_problem("cpu") == "bitsandbytes is not installed"


@pytest.mark.gpu
def test_qlora_training_on_cuda_loads_the_base_in_4bit(tiny_base, tmp_path):
    """The recipe's default on a GPU: the trainer loads the base in NF4 and saves a plain adapter."""
    import json

    from quantgrid.data import load_examples, write_records
    from quantgrid.ml.trainer import QuantGridTrainer

    data = write_records(tmp_path / "train.jsonl", load_examples("builtin:finance-train")[:64])
    trainer = QuantGridTrainer(base_model=tiny_base)
    out = trainer.train(dataset_path=str(data), output_dir=tmp_path / "qlora", max_steps=4, batch_size=4,
                        progress="none")
    log = (out / "training" / "TRAINING_LOG.md").read_text()
    assert "4-bit NF4 (QLoRA)" in log
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16


@pytest.mark.gpu
def test_qlora_merge_on_cuda_dequantizes_first(tiny_base, tmp_path):
    """export merged of a QLoRA adapter on CUDA merges into the dequantized NF4 weights."""
    import json

    from quantgrid.data import load_examples, write_records
    from quantgrid.export.merged import export_merged
    from quantgrid.ml.trainer import QuantGridTrainer

    data = write_records(tmp_path / "train.jsonl", load_examples("builtin:finance-train")[:64])
    adapter = QuantGridTrainer(base_model=tiny_base).train(dataset_path=str(data), output_dir=tmp_path / "qlora",
                                                           max_steps=2, batch_size=4, progress="none")
    out = export_merged(adapter, tmp_path / "merged", tiny_base)
    assert json.loads((out / "quantgrid_export.json").read_text())["dequantized_4bit"] is True


def test_qlora_adapter_merges_into_the_dequantized_nf4_weights_on_cpu(bnb, tiny_base, tmp_path):
    """The merged model of a QLoRA adapter = dequantized NF4 base + B·A·alpha/r: the weights
    the adapter was trained against, not the full-precision ones."""
    import json

    import torch
    from safetensors.torch import load_file

    from quantgrid.export.merged import export_merged
    from quantgrid.ml.models import load_base

    adapter = random_lora(tiny_base, tmp_path / "qlora", seed=3, manifest=False)
    (adapter / "training").mkdir()
    (adapter / "training" / "train_config.yaml").write_text("load_in_4bit: true\n")
    out = export_merged(adapter, tmp_path / "merged", tiny_base)
    assert json.loads((out / "quantgrid_export.json").read_text())["dequantized_4bit"] is True
    merged = load_file(str(out / "model.safetensors"))["model.layers.1.self_attn.v_proj.weight"]
    nf4, _ = load_base(tiny_base, load_in_4bit=True, device="cpu")
    deq = nf4.dequantize().model.layers[1].self_attn.v_proj.weight.float()
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_{}.weight"
    delta = lora[key.format("B")] @ lora[key.format("A")] * (32 / 16)
    assert torch.allclose(merged, deq + delta, atol=1e-5)
    full = load_file(str(next(Path(tiny_base).glob("*.safetensors"))))
    assert not torch.allclose(merged, full["model.layers.1.self_attn.v_proj.weight"] + delta, atol=1e-4)
