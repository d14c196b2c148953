"""Our GGUF files against llama.cpp's own converters (convert_hf_to_gguf.py,
convert_lora_to_gguf.py) on the same tiny bases: the same tensor names, shapes, types and
values, and the same vocabulary.

Slow, and it needs a llama.cpp source tree: set QUANTGRID_LLAMA_CPP to one, e.g. the one
inside llama-cpp-python's source distribution:

    pip download --no-deps --no-binary :all: llama-cpp-python -d /tmp/lcpp
    tar xzf /tmp/lcpp/llama_cpp_python-*.tar.gz -C /tmp/lcpp
    QUANTGRID_LLAMA_CPP=$(echo /tmp/lcpp/llama_cpp_python-*/vendor/llama.cpp) pytest -m slow tests/integration/test_llama_cpp_converter.py

QUANTGRID_CONVERTER_PYTHONPATH, when set, is put first on the converters' PYTHONPATH (e.g. a
``pip install --target DIR "transformers<5"``), to check the files with the transformers 4.x
that llama.cpp's requirements pin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _adapters import random_lora

pytestmark = pytest.mark.slow

# The keys both converters write from the model itself (general.name and the like differ on purpose).
SHARED_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
               "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
               "tokenizer.ggml.unknown_token_id", "general.file_type", "general.quantization_version")


@pytest.fixture(scope="module")
def llama_cpp_tree() -> Path:
    tree = os.environ.get("QUANTGRID_LLAMA_CPP")
    if not tree or not (Path(tree) / "convert_hf_to_gguf.py").is_file():
        pytest.fail("set QUANTGRID_LLAMA_CPP to a llama.cpp source tree (see this module's docstring for how to "
                    "get the one in llama-cpp-python's source distribution)")
    return Path(tree)


def _convert(tree: Path, script: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (os.environ.get("QUANTGRID_CONVERTER_PYTHONPATH"), str(tree / "gguf-py")) if p)}
    proc = subprocess.run([sys.executable, str(tree / script), *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _read(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    return {t.name: t for t in r.tensors}, {k: f.contents() for k, f in r.fields.items()}


def _same_tensors(ours, ref, exact: bool = True) -> None:
    assert set(ours) == set(ref)
    for name, t in ours.items():
        assert t.tensor_type == ref[name].tensor_type, name
        assert list(t.shape) == list(ref[name].shape), name
        if exact:
            assert np.array_equal(t.data, ref[name].data), name
        else:
            assert np.allclose(t.data, ref[name].data, rtol=1e-6, atol=1e-7), name


# The SentencePiece families: llama.cpp's converter recognizes a byte-level BPE tokenizer only
# by the checksum of a real one (Llama 3, Qwen2...), so it refuses the tiny BPE vocabularies.
# Gemma covers a head size that is not hidden_size / n_heads.
@pytest.mark.parametrize("family", ["llama-spm", "mistral", "gemma"])
def test_base_matches_convert_hf_to_gguf(llama_cpp_tree, tiny_family_base, tmp_path, family):
    from quantgrid.export.gguf import export_base

    base = tiny_family_base(family)
    _convert(llama_cpp_tree, "convert_hf_to_gguf.py", base, "--outtype", "f32", "--outfile", str(tmp_path / "ref.gguf"))
    ours_t, ours_f = _read(export_base(base, tmp_path / "ours.gguf", "f32"))
    ref_t, ref_f = _read(tmp_path / "ref.gguf")
    _same_tensors(ours_t, ref_t)
    for key in SHARED_KEYS:
        assert ours_f.get(key) == ref_f.get(key), key
    arch = ours_f["general.architecture"]
    for key in ("context_length", "embedding_length", "block_count", "feed_forward_length",
                "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon"):
        assert ours_f[f"{arch}.{key}"] == pytest.approx(ref_f[f"{arch}.{key}"]), key
    if f"{arch}.attention.key_length" in ref_f:
        assert ours_f[f"{arch}.attention.key_length"] == ref_f[f"{arch}.attention.key_length"]


@pytest.mark.parametrize("family", ["llama-spm", "qwen2", "gemma"])
def test_adapter_matches_convert_lora_to_gguf(llama_cpp_tree, tiny_family_base, tmp_path, family):
    from quantgrid.export.gguf import export_adapter

    base = tiny_family_base(family)
    random_lora(base, tmp_path / "adapter", seed=5, manifest=False)
    _convert(llama_cpp_tree, "convert_lora_to_gguf.py", str(tmp_path / "adapter"), "--base", base, "--outtype",
             "f32", "--outfile", str(tmp_path / "ref.gguf"))
    ours_t, ours_f = _read(export_adapter(tmp_path / "adapter", base, tmp_path / "ours.gguf", "f32"))
    ref_t, ref_f = _read(tmp_path / "ref.gguf")
    _same_tensors(ours_t, ref_t, exact=False)
    for key in ("general.type", "adapter.type", "adapter.lora.alpha", "general.quantization_version"):
        assert ours_f.get(key) == ref_f.get(key), key
