"""`quantgrid eval --gguf`: the proof of loss through llama.cpp on the exported files equals
the PyTorch one for f32 files, and results.json names the quantization it measured."""

from __future__ import annotations

import json

import pytest
from _adapters import random_lora

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def files(tiny_base, tmp_path_factory):
    from quantgrid.export.gguf import export_adapter, export_base

    d = tmp_path_factory.mktemp("gguf-eval")
    random_lora(tiny_base, d / "adapter", seed=2, scale=0.02)
    return {"dir": d, "adapter": d / "adapter", "f32": export_base(tiny_base, d / "base-f32.gguf", "f32"),
            "q8": export_base(tiny_base, d / "base-q8.gguf", "q8_0"),
            "lora": export_adapter(d / "adapter", tiny_base, d / "lora.gguf")}


def _eval(tiny_base, files, out, **kw):
    from quantgrid.eval.harness import EvalConfig, run_eval

    cfg = EvalConfig(benchmark="builtin:finance-dev", limit=8, adapter=files["adapter"], base_model=tiny_base,
                     metrics=["loss"], ood="none", output=out, **kw)
    return run_eval(cfg)


def test_f32_gguf_loss_equals_pytorch_and_names_its_type(tiny_base, files, tmp_path):
    torch_ev = _eval(tiny_base, files, tmp_path / "torch" / "results.json")
    gguf_ev = _eval(tiny_base, files, tmp_path / "gguf" / "results.json", gguf=files["f32"],
                    gguf_adapter=files["lora"])
    for key in (None, torch_ev.adapter_key):
        assert gguf_ev.losses[key].n_tokens == torch_ev.losses[key].n_tokens
        assert gguf_ev.losses[key].mean == pytest.approx(torch_ev.losses[key].mean, rel=1e-3)
    assert gguf_ev.losses[gguf_ev.adapter_key].mean != pytest.approx(gguf_ev.losses[None].mean, rel=1e-3)
    written = json.loads((tmp_path / "gguf" / "results.json").read_text())
    assert written["quantization"] == "F32"
    assert json.loads((tmp_path / "torch" / "results.json").read_text())["quantization"] == "float32"


def test_q8_0_gguf_is_close_and_says_q8_0(tiny_base, files, tmp_path):
    torch_ev = _eval(tiny_base, files, None)
    ev = _eval(tiny_base, files, tmp_path / "results.json", gguf=files["q8"], gguf_adapter=files["lora"])
    assert ev.results.quantization == "Q8_0"
    assert ev.losses[None].mean == pytest.approx(torch_ev.losses[None].mean, rel=2e-2)


def test_gguf_adapter_without_gguf_is_a_config_error(files):
    from quantgrid.errors import ConfigError
    from quantgrid.eval.harness import EvalConfig

    with pytest.raises(ConfigError, match="--gguf-adapter needs --gguf"):
        EvalConfig(benchmark="builtin:finance-dev", adapter=files["adapter"], gguf_adapter=files["lora"])
