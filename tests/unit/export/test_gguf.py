"""GGUF export checked by the real consumer: llama-cpp-python loads our files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from quantgrid.errors import AdapterMismatchError, ExportError
from quantgrid.export.gguf import _pre_tokenizer, export_adapter, export_base, gguf_tensor_types, permute_rows

llama_cpp = pytest.importorskip("llama_cpp")


def _llama(model_path, lora_path=None):
    return llama_cpp.Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                           logits_all=True, verbose=False, n_ctx=256, seed=0)


@pytest.fixture
def open_llama():
    """Open Llama instances and close each one explicitly: llama.cpp frees its model and
    LoRA in C, and leaving that to the garbage collector can crash the process."""
    opened = []

    def make(model_path, lora_path=None):
        opened.append(_llama(model_path, lora_path))
        return opened[-1]

    yield make
    for llm in reversed(opened):
        llm.close()


def _logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.fixture(scope="module")
def f32_files(tiny_base, random_adapter, tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    return export_base(tiny_base, d / "base.gguf", "f32"), export_adapter(random_adapter, tiny_base, d / "lora.gguf")


def test_permute_rows_matches_interleaved_rope_layout():
    # 1 head, head_dim 4: HF rows [x0, x1, y0, y1] (rotate-half) -> llama.cpp [x0, y0, x1, y1]
    w = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert permute_rows(w, 1)[:, 0].tolist() == [0, 2, 1, 3]


def test_tokenizer_metadata_gives_the_same_ids(f32_files, reference, open_llama):
    llm = open_llama(f32_files[0])
    text = "Question: What is the price to earnings ratio of a stock?\nAnswer:"
    assert llm.tokenize(text.encode(), add_bos=True, special=False) == reference["ids"]


def test_f32_base_and_adapter_logits_match_pytorch(f32_files, reference, open_llama):
    base_gguf, lora_gguf = f32_files
    ids = reference["ids"]
    base = _logits(open_llama(base_gguf), ids)
    adapted = _logits(open_llama(base_gguf, lora_gguf), ids)
    assert np.abs(base - reference["base"]).max() < 1e-3
    assert np.abs(adapted - reference["adapter"]).max() < 1e-3
    # the adapter really changes the output, so the comparison above is not vacuous
    assert np.abs(reference["adapter"] - reference["base"]).max() > 1e-2


def test_q8_0_top1_tokens_agree(tiny_base, random_adapter, reference, tmp_path, open_llama):
    base_q8 = export_base(tiny_base, tmp_path / "base-q8.gguf", "q8_0")
    lora = export_adapter(random_adapter, tiny_base, tmp_path / "lora.gguf")
    ids = reference["ids"]
    got = _logits(open_llama(base_q8, lora), ids)
    ref = reference["adapter"]
    # q8_0 rounding moves logits a little; every position whose top-1 is not a near tie must agree
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.05
    assert clear.sum() >= len(ids) // 2
    assert (got.argmax(-1) == ref.argmax(-1))[clear].all()
    assert base_q8.stat().st_size < (tmp_path / "lora.gguf").stat().st_size * 1000


def test_greedy_text_matches_pytorch(f32_files, reference, open_llama):
    import torch

    base_gguf, lora_gguf = f32_files
    ids, model, tok = reference["ids"], reference["model"], reference["tokenizer"]
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)[0, len(ids):].tolist()
    llm = open_llama(base_gguf, lora_gguf)
    out = []
    for tok_id in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(tok_id)
        if len(out) == 12:
            break
    assert out == ref


def test_unsupported_architecture_lists_supported(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ExportError, match="does not support architecture 'gpt2'") as e:
        export_base(tmp_path / "gpt2", tmp_path / "x.gguf")
    assert e.value.hint == "supported architectures: gemma, llama, mistral, qwen2"
    assert not (tmp_path / "x.gguf").exists()


def test_adapter_for_another_base_names_both(tiny_base, random_adapter, tmp_path):
    other = tmp_path / "adapter"
    shutil.copytree(random_adapter, other)
    m = json.loads((other / "quantgrid.json").read_text())
    m["base_model"] = {"name": "mistralai/Mistral-7B-v0.1", "revision": "main", "fingerprint": "0" * 16}
    (other / "quantgrid.json").write_text(json.dumps(m))
    with pytest.raises(AdapterMismatchError) as e:
        export_adapter(other, tiny_base, tmp_path / "a.gguf")
    assert "mistralai/Mistral-7B-v0.1" in str(e.value) and "quantgrid-tiny-test" in str(e.value)
    assert not (tmp_path / "a.gguf").exists()


def test_unwritable_output_is_a_clear_error(tiny_base, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot create output directory"):
        export_base(tiny_base, blocker / "base.gguf")


def test_crash_midway_leaves_no_partial_file(tiny_base, tmp_path, monkeypatch):
    import gguf

    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        export_base(tiny_base, tmp_path / "base.gguf")
    assert list(tmp_path.iterdir()) == []


def test_unknown_outtype(tiny_base, tmp_path):
    with pytest.raises(ExportError, match="unknown --outtype 'q4'"):
        export_base(tiny_base, tmp_path / "b.gguf", "q4")


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


@pytest.mark.parametrize(("pre", "name"), [
    ({"type": "ByteLevel", "use_regex": True}, "gpt-2"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}},
                                            {"type": "ByteLevel", "use_regex": False}]}, "llama-bpe"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}},
                                            {"type": "ByteLevel", "use_regex": False}]}, "qwen2"),
])
def test_pre_tokenizer_named_from_the_split_regex(pre, name):
    assert _pre_tokenizer({"pre_tokenizer": pre}) == name


def test_unknown_pre_tokenizer_is_refused_not_guessed():
    pre = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": r"\w+"}}]}
    with pytest.raises(ExportError, match="unknown pre-tokenizer"):
        _pre_tokenizer({"pre_tokenizer": pre})


def test_f16_adapter_loads_and_matches(tiny_base, random_adapter, reference, f32_files, tmp_path, open_llama):
    lora16 = export_adapter(random_adapter, tiny_base, tmp_path / "lora-f16.gguf", "f16")
    assert lora16.stat().st_size < f32_files[1].stat().st_size
    got = _logits(open_llama(f32_files[0], lora16), reference["ids"])
    assert np.abs(got - reference["adapter"]).max() < 2e-2


# ---------------------------------------------------------------- every family


def _fields(path) -> dict:
    import gguf

    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}


def _top1_agrees(got: np.ndarray, ref: np.ndarray, ids: list[int]) -> None:
    # quantization moves logits a little; every position whose top-1 is not a near tie must agree
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.05
    assert clear.sum() >= len(ids) // 2
    assert (got.argmax(-1) == ref.argmax(-1))[clear].all()


def test_every_family_round_trips_through_llama_cpp(family, tmp_path, open_llama):
    """Base and adapter GGUF of each family: llama.cpp tokenizes the prompt to the HF ids, its
    f32 logits match PyTorch's (relative 1e-3), and q8_0 keeps every clear top-1 token."""
    base_gguf = export_base(family["base_dir"], tmp_path / "base.gguf", "f32")
    lora_gguf = export_adapter(family["adapter_dir"], family["base_dir"], tmp_path / "lora.gguf")
    ids, ref = family["ids"], family["adapter"]
    llm = open_llama(base_gguf, lora_gguf)
    assert llm.tokenize(family["prompt"].encode(), add_bos=family["bos"], special=False) == ids
    adapted = _logits(llm, ids)
    assert np.abs(adapted - ref).max() / np.abs(ref).max() < 1e-3
    base = _logits(open_llama(base_gguf), ids)
    assert np.abs(base - family["base"]).max() / np.abs(family["base"]).max() < 1e-3
    assert np.abs(ref - family["base"]).max() > 1e-1  # the adapter really changes the output
    q8 = export_base(family["base_dir"], tmp_path / "base-q8.gguf", "q8_0")
    _top1_agrees(_logits(open_llama(q8, lora_gguf), ids), ref, ids)


def test_head_size_is_recorded_for_llama_cpp(tiny_family_base, tmp_path):
    """A head size that is not hidden_size / n_heads (Mistral-Nemo, Gemma shapes) is written as
    the attention key/value length; without it llama.cpp refuses the file (invalid n_rot)."""
    from quantgrid.ml.models import load_config

    base = tiny_family_base("mistral-nemo")
    cfg = load_config(base)
    assert cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads
    f = _fields(export_base(base, tmp_path / "nemo.gguf", "f32"))
    assert f["llama.attention.key_length"] == f["llama.attention.value_length"] == cfg.head_dim
    assert f["llama.rope.dimension_count"] == cfg.head_dim


@pytest.mark.parametrize("name", ["llama-spm", "gemma"])
def test_sentencepiece_vocab_as_llama_cpp_expects(tiny_family_base, tmp_path, name):
    """SentencePiece bases: the "llama" tokenizer model with every piece's score and type,
    the special tokens, and the space prefix Llama-2 has and Gemma has not."""
    import gguf
    import sentencepiece as spm

    base = tiny_family_base(name)
    f = _fields(export_base(base, tmp_path / "b.gguf", "f32"))
    sp = spm.SentencePieceProcessor(model_file=f"{base}/tokenizer.model")
    assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.pre"] == "default"
    tokens, scores, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.scores"], f["tokenizer.ggml.token_type"]
    n = sp.vocab_size()
    assert tokens[:n] == [sp.id_to_piece(i) for i in range(n)]
    assert scores[:n] == pytest.approx([sp.get_score(i) for i in range(n)])
    assert types[sp.unk_id()] == gguf.TokenType.UNKNOWN
    assert types[sp.bos_id()] == types[sp.eos_id()] == gguf.TokenType.CONTROL
    assert types[tokens.index("<0x0A>")] == gguf.TokenType.BYTE
    assert f["tokenizer.ggml.bos_token_id"] == sp.bos_id() and f["tokenizer.ggml.eos_token_id"] == sp.eos_id()
    assert f["tokenizer.ggml.add_space_prefix"] is (name != "gemma")
    assert f["tokenizer.ggml.add_bos_token"] is True


def test_adapter_metadata_names_the_adapter_and_its_base(random_adapter, tiny_base, tmp_path):
    import gguf

    f = _fields(export_adapter(random_adapter, tiny_base, tmp_path / "lora.gguf"))
    assert f["general.type"] == "adapter" and f["adapter.type"] == "lora"
    assert f["general.name"] == "random"
    assert f["general.base_model.count"] == 1 and f["general.base_model.0.name"] == "quantgrid-tiny-test"
    assert f["general.quantization_version"] == gguf.GGML_QUANT_VERSION
    assert f["adapter.lora.alpha"] == 32.0


def test_an_adapter_gets_no_k_quant(random_adapter, tiny_base, tmp_path):
    with pytest.raises(ExportError, match="not available for a LoRA adapter"):
        export_adapter(random_adapter, tiny_base, tmp_path / "lora.gguf", "q4_k_m")


def test_an_absent_base_fails_at_once_naming_the_flag(random_adapter, tmp_path, monkeypatch):
    """No network retries: a base that is not here is reported before anything is tried."""
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    t0 = time.monotonic()
    with pytest.raises(ExportError, match="not on this machine") as e:
        export_adapter(random_adapter, "mistralai/Mistral-7B-v0.1", tmp_path / "lora.gguf")
    assert time.monotonic() - t0 < 5
    assert "--base" in e.value.hint
    assert not (tmp_path / "lora.gguf").exists()


@pytest.mark.parametrize("outtype", ["q4_k_m", "q6_k"])
def test_k_quant_base_through_llama_cpps_quantizer(tiny_base, random_adapter, reference, tmp_path, open_llama,
                                                   outtype):
    """q4_k_m / q6_k come from llama.cpp's quantizer. The tiny base's 64-wide rows are not a
    multiple of the 256-wide k-quant block, so llama.cpp picks its fallback types for them:
    the file says what it holds, and the model still loads and keeps its top-1 tokens."""
    out = export_base(tiny_base, tmp_path / f"base-{outtype}.gguf", outtype)
    f = _fields(out)
    assert f["general.file_type"] == {"q4_k_m": 15, "q6_k": 18}[outtype]
    types = set(gguf_tensor_types(out).values())
    assert types - {"F32", "F16"}, types  # something was quantized
    assert list(tmp_path.iterdir()) == [out]  # the f16 intermediate is gone
    llm = open_llama(out, export_adapter(random_adapter, tiny_base, tmp_path / "lora.gguf"))
    got = _logits(llm, reference["ids"])
    assert np.corrcoef(got.ravel(), reference["adapter"].ravel())[0, 1] > 0.95
