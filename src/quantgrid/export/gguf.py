"""Base model and LoRA adapter -> GGUF, for llama.cpp and Ollama.

We use the ``gguf`` package's writer, tensor-name map and vocab helpers (the same
ones llama.cpp's own converters use) rather than llama.cpp's convert scripts, because
those are not shipped in any installable package and pull in the whole llama.cpp tree.
What we add is small: reading our model/adapter, the Llama q/k row permutation, and
choosing tensor types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantgrid.errors import ExportError

if TYPE_CHECKING:
    import gguf as gguf_t

OUTTYPES = ("f32", "f16", "q8_0")
# HF model_type -> llama.cpp architecture. Mistral runs as "llama" in llama.cpp.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}


@dataclass(frozen=True)
class Arch:
    gguf_name: str
    n_layers: int
    n_head: int
    n_head_kv: int
    permute_qk: bool  # llama.cpp's "llama" rope is interleaved, HF's is rotate-half: rows must be permuted


def _arch(config) -> Arch:
    mt = config.model_type
    if mt not in ARCHITECTURES:
        raise ExportError(f"GGUF export does not support architecture {mt!r}",
                          hint=f"supported architectures: {', '.join(sorted(ARCHITECTURES))}")
    name = ARCHITECTURES[mt]
    return Arch(name, config.num_hidden_layers, config.num_attention_heads,
                getattr(config, "num_key_value_heads", None) or config.num_attention_heads, name == "llama")


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection from HF's rotate-half RoPE layout to
    llama.cpp's interleaved one. Works for a weight [out, in] and for LoRA's B [out, r]."""
    head_dim_half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, head_dim_half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _maybe_permute(hf_name: str, w: np.ndarray, arch: Arch) -> np.ndarray:
    if arch.permute_qk and hf_name.endswith("q_proj.weight"):
        return permute_rows(w, arch.n_head)
    if arch.permute_qk and hf_name.endswith("k_proj.weight"):
        return permute_rows(w, arch.n_head_kv)
    return w


def _tensor_map(arch: Arch):
    import gguf

    model_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch.gguf_name]
    return gguf.get_tensor_name_map(model_arch, arch.n_layers)


def _gguf_name(tmap, hf_name: str) -> str:
    name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ExportError(f"no GGUF name for tensor {hf_name!r}", hint="is this a standard Llama-family checkpoint?")
    return name


def _encode(data: np.ndarray, outtype: str):
    """(array to write, raw dtype or None). 1-D tensors (norms) stay f32, as llama.cpp expects."""
    import gguf

    data = data.astype(np.float32)
    if outtype == "f32" or data.ndim == 1:
        return data, None
    if outtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def _file_type(outtype: str) -> int:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]


def _check_outtype(outtype: str) -> None:
    if outtype not in OUTTYPES:
        raise ExportError(f"unknown --outtype {outtype!r}", hint=f"choose one of {', '.join(OUTTYPES)}")


def _writable(out: Path) -> None:
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create output directory {parent}: {e.strerror}",
                          hint="choose an output path in a directory you can write to") from None
    import os

    if not os.access(parent, os.W_OK):
        raise ExportError(f"output directory {parent} is not writable",
                          hint="choose an output path in a directory you can write to")


def _write(writer: gguf_t.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_hparams(w: gguf_t.GGUFWriter, config, name: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    w.add_name(name)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope_theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get(
        "rope_theta", 10000.0)
    w.add_rope_freq_base(float(rope_theta))
    w.add_vocab_size(config.vocab_size)


def _pre_tokenizer(tj: dict) -> str:
    """llama.cpp's name for the tokenizer's split regex: it must split text exactly as the
    HF tokenizer did, or the GGUF model sees other tokens than the ones it was trained on."""
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # HF's ByteLevel regex is GPT-2's (the tiny base, GPT-2-style BPEs)
    regexes = [p.get("pattern", {}).get("Regex", "") for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
    for regex in regexes:
        if r"\p{N}{1,3}" in regex:
            return "llama-bpe"  # Llama 3: numbers in groups of up to three digits
        if r"|\p{N}|" in regex:
            return "qwen2"  # Qwen2: one digit per token
    raise ExportError("unknown pre-tokenizer: quantgrid cannot name its split regex for llama.cpp",
                      hint="convert this base with llama.cpp's convert_hf_to_gguf.py; `export gguf --adapter` "
                           "still works for the adapter")


def _add_tokenizer(w: gguf_t.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    """Byte-level BPE vocab ("gpt2" model in llama.cpp terms) from tokenizer.json."""
    import gguf

    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise ExportError(f"{model_dir} has no tokenizer.json",
                          hint="GGUF export supports byte-level BPE tokenizers saved by a fast HF tokenizer")
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    if tj.get("model", {}).get("type") != "BPE":
        raise ExportError("GGUF export supports byte-level BPE tokenizers only",
                          hint="SentencePiece bases (Llama-2, Mistral v0.1) convert with llama.cpp's convert_hf_to_gguf.py")
    vocab: dict[str, int] = dict(tj["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    vocab.update(special)
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        tok = by_id.get(i, f"[PAD{i}]")  # the embedding may be larger than the vocab
        tokens.append(tok)
        types.append(gguf.TokenType.CONTROL if tok in special or i not in by_id else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tj))
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(w, quiet=True)


def export_base(model_dir: str | Path, out: str | Path, outtype: str = "f16") -> Path:
    """Write the base model (weights + tokenizer + hyper-parameters) as one GGUF file."""
    import gguf
    from safetensors import safe_open

    from quantgrid.ml.models import base_info, load_config
    from quantgrid.utils import atomic_path

    _check_outtype(outtype)
    model_dir, out = Path(model_dir), Path(out)
    config = load_config(str(model_dir))
    arch = _arch(config)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir} has no .safetensors weights",
                          hint="re-save the model with save_pretrained(safe_serialization=True)")
    _writable(out)
    tmap = _tensor_map(arch)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_name)
        _add_hparams(w, config, base_info(str(model_dir), config).name)
        w.add_file_type(_file_type(outtype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(w, model_dir, config.vocab_size)
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for hf_name in st.keys():
                    if hf_name.endswith("rotary_emb.inv_freq"):
                        continue
                    name = _gguf_name(tmap, hf_name)
                    data = _maybe_permute(hf_name, st.get_tensor(hf_name).float().numpy(), arch)
                    data, raw = _encode(data, outtype)
                    w.add_tensor(name, data, raw_dtype=raw)
        _write(w)
    return out


def export_adapter(adapter_dir: str | Path, base_dir: str | Path, out: str | Path, outtype: str = "f32") -> Path:
    """Write a PEFT LoRA adapter as a GGUF LoRA adapter, with alpha recorded.

    ``outtype`` as for the base; factors whose rows are not a multiple of the q8_0 block
    (a rank-16 B) fall back to f16.

    Tensor names follow llama.cpp: ``<base tensor name>.lora_a`` / ``.lora_b``. For the
    "llama" architecture the q/k output rows are permuted like the base weights, which
    for a product B·A means permuting the rows of B only.
    """
    import gguf
    from safetensors.numpy import load_file

    from quantgrid.ml.models import base_info, check_adapter_base, load_config
    from quantgrid.utils import atomic_path

    _check_outtype(outtype)
    adapter_dir, out = Path(adapter_dir), Path(out)
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise ExportError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)",
                          hint="pass the directory written by `quantgrid train`")
    config = load_config(str(base_dir))
    check_adapter_base(adapter_dir, base_info(str(base_dir), config))
    arch = _arch(config)
    acfg = json.loads(cfg_path.read_text())
    if acfg.get("use_dora") or acfg.get("use_rslora"):
        raise ExportError("GGUF LoRA export supports plain LoRA only (no DoRA / rsLoRA)")
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    _writable(out)
    tmap = _tensor_map(arch)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_name)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(acfg["lora_alpha"]))
        w.add_name(adapter_dir.name)
        for key in sorted(weights):
            if ".lora_A." not in key and ".lora_B." not in key:
                raise ExportError(f"adapter tensor {key!r} is not a LoRA factor",
                                  hint="modules_to_save / bias tensors cannot be exported to GGUF")
            # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj.weight
            which = "a" if ".lora_A." in key else "b"
            hf_name = key.removeprefix("base_model.model.").split(".lora_")[0] + ".weight"
            data = weights[key].astype(np.float32)
            if which == "b":
                data = _maybe_permute(hf_name, data, arch)
            data, raw = _encode(np.ascontiguousarray(data), outtype)
            w.add_tensor(f"{_gguf_name(tmap, hf_name)}.lora_{which}", data, raw_dtype=raw)
        _write(w)
    return out
