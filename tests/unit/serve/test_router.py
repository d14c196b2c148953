"""Model-name resolution and 'auto' routing (Arrow prototypes, keywords)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quantgrid.errors import NotFound
from quantgrid.serve.router import Router, arrow_score, keyword_score, top_right_singular_vector


@pytest.mark.parametrize("d_out,d_in,r,seed", [(8, 6, 2, 0), (16, 32, 4, 1), (64, 64, 8, 2), (5, 40, 3, 3)])
def test_factor_space_svd_matches_full_svd(d_out, d_in, r, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g)
    v = top_right_singular_vector(a, b)
    _, _, vh = torch.linalg.svd((b @ a).double())
    assert v.shape == (d_in,)
    assert abs(float(v.double() @ vh[0])) == pytest.approx(1.0, abs=1e-5)  # same direction up to sign


@pytest.mark.parametrize("prompt,keywords,expected", [
    ("what is the implied volatility of this option", ["implied", "volatility", "greeks", "strike"], 2 / 3),
    ("bond duration and yield and coupon", ["yield", "duration", "coupon", "maturity"], 1.0),
    ("tell me a joke", ["yield", "duration"], 0.0),
    ("anything", [], 0.0),
    ("Funding rates on BITCOIN", ["bitcoin"], 1.0),
])
def test_keyword_score(prompt, keywords, expected):
    assert keyword_score(prompt, keywords) == pytest.approx(expected)


def test_arrow_score_is_mean_abs_cosine():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert arrow_score({"m": x}, {"m": torch.tensor([1.0, 0.0])}) == pytest.approx(2 / 3)
    assert arrow_score({"m": x}, {"other": torch.tensor([1.0, 0.0])}) == 0.0


def test_resolve_model_names(engine):
    router = Router(engine)
    assert router.resolve("base").adapter is None
    assert router.resolve("quantgrid:bonds").adapter == "bonds"
    assert router.resolve("auto").auto
    assert router.resolve("quantgrid").adapter is None  # no release deployed yet: the base
    router.release = "bonds"
    assert router.resolve("quantgrid").adapter == "bonds"
    assert "quantgrid:bonds" not in router.model_names()  # the release is listed as 'quantgrid'
    with pytest.raises(NotFound, match="gpt-4"):
        router.resolve("gpt-4")


def _aligned_adapter(engine, prompt_ids, out: Path, template: Path) -> Path:
    """An adapter whose A rows all point along the prompt's mean q_proj input: an
    adapter 'trained on prompts like this one'."""
    from safetensors.torch import save_file

    inputs = engine.capture_inputs(prompt_ids)
    tensors = {}
    for layer in range(engine.model.config.num_hidden_layers):
        name = f"model.layers.{layer}.self_attn.q_proj"
        direction = inputs[name].mean(0)
        a = direction.repeat(4, 1) + 0.01 * torch.randn(4, direction.numel())
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(64, 4)
    out.mkdir()
    cfg = json.loads((template / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**cfg, "r": 4, "target_modules": ["q_proj"]}))
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out


def test_arrow_routes_a_prompt_to_the_adapter_aligned_with_it(tiny_base, adapters, tmp_path):
    from quantgrid.serve.engine import Engine

    eng = Engine.from_base(tiny_base, max_slots=2)
    eng.register_adapter("bonds", adapters["bonds"])
    eng.ensure_wrapped([f"model.layers.{i}.self_attn.q_proj" for i in range(2)])
    prompt = "What is the duration of a ten year bond"
    ids = eng.encode(prompt)
    eng.register_adapter("aligned", _aligned_adapter(eng, ids, tmp_path / "aligned", adapters["bonds"]))
    route = Router(eng, "arrow").route(prompt, ids)  # default threshold
    assert route.adapter == "aligned"
    assert route.scores["aligned"] > 2 * route.scores["bonds"]
    assert route.scores["bonds"] < route.score
    assert Router(eng, "arrow", threshold=0.999).route(prompt, ids).adapter is None  # below threshold


def test_keyword_routing_uses_manifest_descriptions(engine):
    router = Router(engine, "keywords")
    r = router.route("What are the greeks and implied volatility at this strike?", [1, 2])
    assert r.adapter == "options" and r.score == 1.0
    assert router.route("What is the yield to maturity and duration?", [1]).adapter == "bonds"
    assert router.route("Write me a poem", [1]).adapter is None
