"""The submission file set, the zip builder, BaseShape, and stage 1 on real PEFT output."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from malicious import generator as g

from quantgrid.adapter import (
    BaseShape,
    check_submission,
    expected_lora_shapes,
    is_allowed_file,
    is_submission_file,
)
from quantgrid.errors import ValidationError
from quantgrid.safetensors_check import parse_header, tensor_view


@pytest.mark.parametrize("name,ok", [
    ("adapter_config.json", True), ("adapter_model.safetensors", True), ("quantgrid.json", True),
    ("README.md", True), ("training/train_config.yaml", True), ("training/TRAINING_LOG.md", True),
    ("training/loss.png", True), ("eval/results.json", True), ("eval/benchmark.jsonl", True),
    ("training/dataset.jsonl", False), ("adapter_model.bin", False), ("training/x.py", False),
    ("eval/sub/results.json", False), ("training/.hidden.md", False), ("other/README.md", False),
    ("readme.md", False), ("checkpoint-10/adapter_model.safetensors", False), ("eval/..json", False),
])
def test_allowlist_of_stored_submissions(name, ok):
    assert is_allowed_file(name) is ok


@pytest.mark.parametrize("name,ok", [
    ("adapter_config.json", True), ("adapter_model.safetensors", True), ("quantgrid.json", True),
    ("README.md", True), ("training/train_config.yaml", True), ("training/TRAINING_LOG.md", True),
    ("training/loss.png", True), ("eval/results.json", True),
    # the contributor's text: never in a new submission
    ("eval/benchmark.jsonl", False), ("eval/REPORT.md", False), ("eval/base_results.json", False),
    ("eval/ood_results.json", False), ("training/dataset.jsonl", False), ("training/notes.md", False),
])
def test_allowlist_of_new_submissions(name, ok):
    assert is_submission_file(name) is ok


def test_adapter_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import quantgrid.adapter, quantgrid.archive, "
            "quantgrid.safetensors_check, quantgrid.hub.submit; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_expected_shapes_follow_gqa():
    shapes = expected_lora_shapes(g.RECIPE, g.BASE)
    assert len(shapes) == 2 * 4 * 2
    p = "base_model.model.model.layers.1.self_attn"
    assert shapes[f"{p}.q_proj.lora_A.weight"] == (4, 64)
    assert shapes[f"{p}.q_proj.lora_B.weight"] == (64, 4)
    assert shapes[f"{p}.k_proj.lora_B.weight"] == (32, 4)  # 2 kv heads x 16
    assert shapes[f"{p}.o_proj.lora_A.weight"] == (4, 64)


def test_bf16_and_f16_views_decode_exactly():
    x = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)
    bf = (x.view(np.uint32) >> 16).astype("<u2")
    h = json.dumps({"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F16", "shape": [2, 2], "data_offsets": [8, 16]}}).encode()
    data = struct.pack("<Q", len(h)) + h + bf.tobytes() + x.astype("<f2").tobytes()
    tensors, _ = parse_header(data)
    np.testing.assert_array_equal(tensor_view(data, tensors["a"]), x)
    np.testing.assert_array_equal(tensor_view(data, tensors["b"]), x)


def test_duplicate_json_keys_in_header_are_rejected():
    h = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], ' \
        b'"data_offsets": [0, 4]}}'
    with pytest.raises(ValidationError) as err:
        parse_header(struct.pack("<Q", len(h)) + h + b"\0" * 4)
    assert err.value.check == "safetensors.header"


def test_outlier_norm_among_layers_is_rejected():
    base = BaseShape.from_config({**g.BASE_CONFIG, "num_hidden_layers": 6}, "six")
    recipe = g.RECIPE
    rng = np.random.default_rng(0)
    tensors = {k: (rng.standard_normal(s) * 0.05).astype(np.float32)
               for k, s in expected_lora_shapes(recipe, base).items()}
    key = "base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"
    tensors[key] *= 500  # max |x| ~ 100, under the absolute limit; only the outlier rule catches it
    files = g.good_files(weights=g.st_bytes(tensors), fingerprint=base.fingerprint)
    with pytest.raises(ValidationError) as err:
        check_submission(g.zip_bytes(files), recipe, base)
    assert err.value.check == "weights.norm" and "v_proj" in err.value.message


def test_base_shape_matches_models_fingerprint(tiny_base):
    from quantgrid.ml.models import base_info

    shape = BaseShape.from_dir(tiny_base)
    info = base_info(tiny_base)
    assert shape.fingerprint == info.fingerprint
    assert shape.name == info.name
    assert shape.num_layers == info.num_layers


def test_a_real_peft_adapter_passes_stage_1(tiny_base, tmp_path):
    """PEFT's own saved files (names, shapes, config) are what stage 1 expects."""
    import torch

    from quantgrid.adapter import build_submission_zip, hashed_files, read_manifest, write_manifest
    from quantgrid.ml.models import attach_lora, base_info, load_base

    recipe = g.RECIPE.model_copy(update={"base_model": tiny_base})
    model, _tok = load_base(tiny_base, device="cpu")
    peft_model = attach_lora(model, recipe)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    info = base_info(tiny_base)
    write_manifest(out, recipe=recipe, base_name=info.name, base_fingerprint=info.fingerprint)
    # PEFT's model card names the base by its local path: the hub refuses it, package leaves it out.
    assert "archive.private" == _stage1_check(build_submission_zip(out, tmp_path / "card.zip", read_manifest(
        out).model_copy(update={"files": hashed_files(out)})), recipe, tiny_base)
    files = {f: h for f, h in hashed_files(out).items() if f != "README.md"}
    zpath = build_submission_zip(out, tmp_path / "s.zip", read_manifest(out).model_copy(update={"files": files}))
    with zipfile.ZipFile(zpath) as zf:
        assert sorted(zf.namelist()) == ["adapter_config.json", "adapter_model.safetensors", "quantgrid.json"]
    checked = check_submission(zpath.read_bytes(), recipe, BaseShape.from_dir(tiny_base))
    assert len(checked.tensor_norms) == 2 * 4 * 2
    # And the wrong rank for the same base is caught on the config, before the weights.
    with pytest.raises(ValidationError) as err:
        check_submission(zpath.read_bytes(), recipe.model_copy(update={"lora": recipe.lora.model_copy(
            update={"r": 8})}), BaseShape.from_dir(tiny_base))
    assert err.value.check == "config.rank"


def _stage1_check(zpath, recipe, base_dir) -> str | None:
    try:
        check_submission(zpath.read_bytes(), recipe, BaseShape.from_dir(base_dir))
    except ValidationError as e:
        return e.check
    return None
