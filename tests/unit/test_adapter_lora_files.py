"""quantgrid.lora_files: the one reader and writer of PEFT adapter files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from quantgrid.errors import ExportError, ModelError  # noqa: E402
from quantgrid.lora_files import (  # noqa: E402
    CONFIG,
    WEIGHTS,
    LoraFactors,
    base_id,
    read_config,
    read_weights,
    write_adapter,
)

MODULES = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]


def _save(d: Path, tensors: dict, config: dict) -> Path:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    (d / CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, **config}))
    save_file(tensors, str(d / WEIGHTS))
    return d


def _tensors(r: int = 4, dtype=torch.float32, prefix: str = "base_model.model.") -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for m in MODULES:
        out[f"{prefix}{m}.lora_A.weight"] = torch.randn(r, 64, generator=g).to(dtype)
        out[f"{prefix}{m}.lora_B.weight"] = torch.randn(32, r, generator=g).to(dtype)
    return out


@pytest.fixture(scope="module")
def peft_saved(tiny_base, tmp_path_factory):
    """An adapter PEFT itself saved on the tiny base, with non-zero B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(str(out))
    return out, model


def test_reads_peft_files_by_base_module_name_as_float32(peft_saved):
    d, model = peft_saved
    factors = read_weights(d)
    linear = dict(model.base_model.model.named_modules())
    assert set(factors) == {n for n in linear if n.endswith(("q_proj", "v_proj")) and ".lora" not in n
                            and hasattr(linear[n], "base_layer")}
    for name, f in factors.items():
        layer = linear[name]
        assert f.A.dtype == torch.float32 and f.scaling == pytest.approx(2.0) and f.rank == 4
        assert torch.equal(f.A, layer.lora_A["default"].weight.detach())
        assert torch.equal(f.B, layer.lora_B["default"].weight.detach())


def test_one_policy_for_dtype_names_and_patterns(tmp_path):
    half = _save(tmp_path / "bf16", _tensors(dtype=torch.bfloat16, prefix=""), {})
    f = read_weights(half)
    assert all(x.A.dtype == torch.float32 for x in f.values())  # bf16 widens exactly
    assert torch.equal(f[MODULES[0]].A, _tensors(dtype=torch.bfloat16)[f"base_model.model.{MODULES[0]}.lora_A.weight"]
                       .float())
    # an adapter-name segment (lora_A.default.weight) and the PEFT prefix both normalise away
    named = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
             for k, v in _tensors().items()}
    assert set(read_weights(_save(tmp_path / "named", named, {}))) == set(MODULES)
    # rank/alpha patterns and rsLoRA follow PEFT's scaling
    pat = read_weights(_save(tmp_path / "pat", _tensors(), {"alpha_pattern": {"v_proj": 4}, "use_rslora": True}))
    assert pat[MODULES[0]].scaling == pytest.approx(8 / 2) and pat[MODULES[1]].scaling == pytest.approx(4 / 2)


@pytest.mark.parametrize("tensors,config,match", [
    (_tensors(r=4), {"r": 8}, "has rank 4, but its config gives r=8"),
    ({k: v for k, v in _tensors().items() if "lora_B" not in k}, {}, "not both lora_A and lora_B"),
    ({**_tensors(), "base_model.model.lm_head.weight": torch.ones(2, 2)}, {}, "unexpected tensor"),
    ({**_tensors(), f"{MODULES[0]}.lora_A.weight": torch.ones(4, 64)}, {}, "a second lora_A"),
    ({k: v.to(torch.int8) for k, v in _tensors().items()}, {}, "not a floating-point type"),
    ({k: v.T.contiguous() if "lora_B" in k else v for k, v in _tensors().items()}, {}, "shapes do not fit"),
    (_tensors(), {"use_dora": True}, "DoRA"),
])
def test_bad_weights_fail_clearly_in_the_callers_error_type(tmp_path, tensors, config, match):
    d = _save(tmp_path / "bad", tensors, config)
    with pytest.raises(ModelError, match=match):
        read_weights(d)
    with pytest.raises(ExportError, match=match):
        read_weights(d, error=ExportError)


def test_bad_directories_and_configs(tmp_path):
    with pytest.raises(ModelError, match="not an adapter directory"):
        read_config(tmp_path)
    (tmp_path / CONFIG).write_text("[1]")
    with pytest.raises(ModelError, match="must be a JSON object"):
        read_config(tmp_path)
    (tmp_path / CONFIG).write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_weights(tmp_path)
    (tmp_path / CONFIG).write_text("{}")
    with pytest.raises(ModelError, match="no adapter_model.safetensors"):
        read_weights(tmp_path)
    (tmp_path / WEIGHTS).write_bytes(b"\x80\x03pickle")
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        read_weights(tmp_path)


def _factors(r=4, scaling=1.0) -> dict[str, LoraFactors]:
    t = _tensors(r=r)
    return {m: LoraFactors(t[f"base_model.model.{m}.lora_A.weight"], t[f"base_model.model.{m}.lora_B.weight"], scaling)
            for m in MODULES}


def _base_factors(base, scaling: float, seed: int) -> dict[str, LoraFactors]:
    """Random rank-4 factors for the base's q_proj and v_proj layers, keyed by module name."""
    g = torch.Generator().manual_seed(seed)
    return {n: LoraFactors(torch.randn(4, m.in_features, generator=g) * 0.1,
                           torch.randn(m.out_features, 4, generator=g) * 0.1, scaling)
            for n, m in base.named_modules() if n.endswith(("q_proj", "v_proj"))}


def test_write_is_what_peft_loads_and_names_no_local_path(tiny_base, tmp_path):
    from peft import LoraConfig, PeftConfig, PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    factors = _base_factors(base, 2.0, seed=0)
    out = write_adapter(tmp_path / "a", factors, {"r": 4, "lora_alpha": 8, "target_modules": ["v_proj", "q_proj"],
                                                  "base_model_name_or_path": tiny_base})
    cfg = json.loads((out / CONFIG).read_text())
    # PEFT's own keys (its version's whole LoraConfig), targets sorted, the base's id
    assert set(cfg) == set(LoraConfig().to_dict())
    assert cfg["target_modules"] == ["q_proj", "v_proj"] and cfg["peft_type"] == "LORA"
    assert cfg["base_model_name_or_path"] == "quantgrid-tiny-test"
    assert PeftConfig.from_pretrained(str(out)).base_model_name_or_path == "quantgrid-tiny-test"
    with safe_open(str(out / WEIGHTS), "pt") as st:  # unprefixed factor names, written as PEFT saves them
        assert set(st.keys()) == {f"base_model.model.{m}.lora_{s}.weight" for m in factors for s in "AB"}
    # PEFT loads exactly these factors (a name it does not expect would leave B at zero, silently)
    model = PeftModel.from_pretrained(base, str(out))
    layer = model.base_model.model.model.layers[1].self_attn.v_proj
    assert torch.equal(layer.lora_B["default"].weight.detach(), factors["model.layers.1.self_attn.v_proj"].B)
    assert layer.scaling["default"] == pytest.approx(2.0)
    assert read_weights(out).keys() == factors.keys()


def test_write_refuses_factors_the_config_does_not_describe(tmp_path):
    with pytest.raises(ModelError, match="scaling 2, but the config's lora_alpha/r gives 1"):
        write_adapter(tmp_path / "s", _factors(scaling=2.0), {"r": 4, "lora_alpha": 4, "target_modules": ["q_proj"]})
    with pytest.raises(ModelError, match="has rank 4, but the config gives r=8"):
        write_adapter(tmp_path / "r", _factors(), {"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]})


def test_base_id_is_never_a_local_path(tiny_base, tmp_path):
    assert base_id(tiny_base) == "quantgrid-tiny-test"
    assert base_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert base_id(str(snap)) == "Qwen/Qwen2.5-0.5B"
    plain = tmp_path / "my-base"
    plain.mkdir()
    for path in (str(plain), "/home/someone/models/base", "./base", "~/base", "C:\\models\\base", "", None):
        assert base_id(path) is None


def test_config_without_peft_is_still_one_peft_reads(monkeypatch, tmp_path):
    import sys

    from peft import PeftConfig

    from quantgrid.lora_files import write_config

    monkeypatch.setitem(sys.modules, "peft", None)  # as on a torch-free hub
    cfg = write_config(tmp_path, {"r": 4, "lora_alpha": 4, "target_modules": ("v_proj", "q_proj"),
                                  "base_model_name_or_path": "/srv/bases/tiny"})
    monkeypatch.undo()
    assert cfg["base_model_name_or_path"] is None and cfg["target_modules"] == ["q_proj", "v_proj"]
    back = PeftConfig.from_pretrained(str(tmp_path))
    assert back.r == 4 and back.lora_alpha == 4 and back.task_type == "CAUSAL_LM"


def test_peft_loads_a_release_the_hub_wrote(tiny_base, tmp_path):
    """build_release (what the hub publishes) gives a directory PeftModel.from_pretrained
    loads on the base, computing base + the merged update, with the base's id in its config."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from quantgrid.merge.release import BuildOptions, Contribution, build_release
    from quantgrid.recipe import Recipe

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    contribs = [Contribution(id=f"{i:06d}", contributor=f"c{i}", factors=_base_factors(base, 2.0, seed=i))
                for i in range(2)]
    # the hub's recipe names its base by the local directory
    recipe = Recipe(base_model=tiny_base, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    out = tmp_path / "2026.48"
    out.mkdir()
    build_release(out, contribs, recipe, version="2026.48", base_path=tiny_base,
                  opts=BuildOptions(weighting="equal", rank=8), now=dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc))
    text = (out / CONFIG).read_text()
    assert tiny_base not in text and str(Path(tiny_base).parent) not in text
    assert json.loads(text)["base_model_name_or_path"] == "quantgrid-tiny-test"

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(tiny_base)
        mods = dict(want.named_modules())
        for n in contribs[0].factors:  # equal weights, rank 8 = both rank-4 updates: the merge is exact
            mods[n].weight += sum(c.factors[n].delta() for c in contribs) / 2
        expected = want(ids).logits
        model = PeftModel.from_pretrained(base, str(out))
        got = model(ids).logits
        with model.disable_adapter():
            plain = model(ids).logits
    assert not torch.allclose(got, plain, atol=1e-3)  # the release changes the output...
    assert torch.allclose(got, expected, atol=1e-4)  # ...by exactly the merged update
