"""Base model and LoRA adapter -> GGUF, for llama.cpp and Ollama.

We use the ``gguf`` package's writer, tensor-name map, vocab readers and metadata
(the same ones llama.cpp's own converters use) rather than llama.cpp's convert scripts,
because those are not shipped in any installable package and pull in the whole llama.cpp
tree. What we add is small: reading our model/adapter, the per-architecture tensor fixes
(the Llama q/k row permutation, Gemma's norm offset), and choosing tensor types. K-quants
(q4_k_m, q5_k_m, q6_k) come from llama.cpp's own quantizer through the llama-cpp-python
bindings, applied to an f16 file written here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantgrid.errors import ExportError
from quantgrid.export.settings import LLAMA_QUANT_OUTTYPES, OUTTYPES, WRITER_OUTTYPES  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import gguf as gguf_t

# HF model_type -> llama.cpp architecture. Mistral runs as "llama" in llama.cpp.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma": "gemma"}


@dataclass(frozen=True)
class Arch:
    gguf_name: str
    n_layers: int
    n_head: int
    n_head_kv: int
    permute_qk: bool  # llama.cpp's "llama" rope is interleaved, HF's is rotate-half: rows must be permuted
    norm_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + w); llama.cpp's by w


def _arch(config) -> Arch:
    mt = config.model_type
    if mt not in ARCHITECTURES:
        raise ExportError(f"GGUF export does not support architecture {mt!r}",
                          hint=f"supported architectures: {', '.join(sorted(ARCHITECTURES))}")
    name = ARCHITECTURES[mt]
    return Arch(name, config.num_hidden_layers, config.num_attention_heads,
                getattr(config, "num_key_value_heads", None) or config.num_attention_heads, name == "llama",
                1.0 if name == "gemma" else 0.0)


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

    model_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2,
                  "gemma": gguf.MODEL_ARCH.GEMMA}[arch.gguf_name]
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


def _check_outtype(outtype: str, allowed: tuple[str, ...] = OUTTYPES) -> None:
    if outtype not in allowed:
        hint = f"choose one of {', '.join(allowed)}"
        if outtype in OUTTYPES:
            hint += " (k-quants are for base models: llama.cpp applies an adapter on top of any base type)"
        raise ExportError(f"unknown --outtype {outtype!r}" if outtype not in OUTTYPES else
                          f"--outtype {outtype} is not available for a LoRA adapter", hint=hint)


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


def _add_hparams(w: gguf_t.GGUFWriter, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    # llama.cpp takes the head size from these keys and falls back to hidden_size / n_heads,
    # which is wrong for Gemma-7B, Mistral-Nemo or Qwen3 shapes ("invalid n_rot").
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
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
    """The tokenizer as llama.cpp expects it: a SentencePiece model ("llama" in llama.cpp
    terms) when the base ships tokenizer.model, else a byte-level BPE ("gpt2")."""
    if (model_dir / "tokenizer.model").is_file():
        _add_sentencepiece(w, model_dir, vocab_size)
    else:
        _add_bpe(w, model_dir, vocab_size)


def _add_bpe(w: gguf_t.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    """Byte-level BPE vocab from tokenizer.json."""
    import gguf

    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise ExportError(f"{model_dir} has no tokenizer.json or tokenizer.model",
                          hint="GGUF export needs a fast HF tokenizer (tokenizer.json) or a SentencePiece "
                               "tokenizer.model next to config.json")
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    if tj.get("model", {}).get("type") != "BPE" or tj["model"].get("byte_fallback"):
        raise ExportError("GGUF export supports byte-level BPE and SentencePiece tokenizers; this tokenizer.json "
                          "is neither (a SentencePiece conversion without its tokenizer.model?)",
                          hint="put the base's original tokenizer.model next to config.json, or convert the base "
                               "with llama.cpp's convert_hf_to_gguf.py")
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


def _sentencepiece_model(path: Path):
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ExportError("exporting a SentencePiece base needs the sentencepiece package",
                          hint="pip install sentencepiece (part of quantgrid[ml])") from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
        raise ExportError(f"the base's SentencePiece model is {kind}, not BPE; llama.cpp's Llama tokenizer "
                          "reproduces BPE models only", hint="convert this base with llama.cpp's convert_hf_to_gguf.py")
    return proto


def _add_sentencepiece(w: gguf_t.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    """SentencePiece vocab: every piece with its score and type (normal, unknown, control,
    unused, byte), then the HF tokenizer's added tokens, then filler up to the embedding
    size, as llama.cpp's converter lays it out."""
    import gguf

    proto = _sentencepiece_model(model_dir / "tokenizer.model")
    tokens: list[bytes] = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores: list[float] = [-10000.0] * vocab_size
    types: list[int] = [gguf.TokenType.UNUSED] * vocab_size
    pieces = list(gguf.SentencePieceVocab(model_dir).all_tokens())
    if len(pieces) > vocab_size:
        raise ExportError(f"the tokenizer has {len(pieces)} tokens but the model's embedding only {vocab_size}",
                          hint="is tokenizer.model the one this base was trained with?")
    for i, (text, score, typ) in enumerate(pieces):
        tokens[i], scores[i], types[i] = text, score, typ
    for tok_id, tok in _added_tokens(model_dir, len(pieces)).items():
        if tok_id >= vocab_size:
            raise ExportError(f"added token {tok['content']!r} has id {tok_id}, beyond the embedding ({vocab_size})",
                              hint="resize the model's embeddings to the tokenizer before exporting")
        content = tok["content"]
        if tok.get("special") or content.startswith("<|") and content.endswith("|>"):
            types[tok_id] = gguf.TokenType.CONTROL
        else:
            content = content.replace("\u2581", " ")
            types[tok_id] = gguf.TokenType.USER_DEFINED
        tokens[tok_id], scores[tok_id] = content.encode("utf-8"), -1000.0
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    # Llama-2 and Mistral prefix a space to the text, Gemma does not: the model's own
    # normalizer says which, unless the HF tokenizer overrides it.
    tcfg = _json(model_dir / "tokenizer_config.json")
    prefix = tcfg.get("add_prefix_space")
    w.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix if prefix is None else prefix))
    gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=vocab_size).add_to_gguf(w, quiet=True)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _added_tokens(model_dir: Path, n_pieces: int) -> dict[int, dict]:
    """Added tokens by id: those tokenizer_config.json and added_tokens.json declare (what
    llama.cpp's converter reads), plus tokenizer.json's beyond the SentencePiece pieces
    (transformers 5 records added tokens only there)."""
    out: dict[int, dict] = {}
    for tok in _json(model_dir / "tokenizer.json").get("added_tokens", []):
        if int(tok["id"]) >= n_pieces:
            out[int(tok["id"])] = tok
    for tok_id, tok in (_json(model_dir / "tokenizer_config.json").get("added_tokens_decoder") or {}).items():
        out[int(tok_id)] = tok
    for content, tok_id in _json(model_dir / "added_tokens.json").items():
        out.setdefault(int(tok_id), {"content": content, "special": False})
    return out


def _metadata(w: gguf_t.GGUFWriter, meta: gguf_t.Metadata) -> None:
    meta.set_gguf_meta_model(w)


def _hf_repo(name: str) -> str | None:
    """https URL of a Hugging Face id ("org/name"), None for a local path."""
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) and not Path(name).exists():
        return f"https://huggingface.co/{name}"
    return None


def export_base(model_dir: str | Path, out: str | Path, outtype: str = "f16") -> Path:
    """Write the base model (weights + tokenizer + hyper-parameters) as one GGUF file.

    ``outtype`` f32 / f16 / q8_0 is written here; q4_k_m / q5_k_m / q6_k are an f16 file
    quantized by llama.cpp (see ``quantize``)."""
    _check_outtype(outtype)
    out = Path(out)
    if outtype in LLAMA_QUANT_OUTTYPES:
        import tempfile

        _writable(out)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
            f16 = _export_base(Path(model_dir), Path(tmp) / "f16.gguf", "f16")
            return quantize(f16, out, outtype)
    return _export_base(Path(model_dir), out, outtype)


def _export_base(model_dir: Path, out: Path, outtype: str) -> Path:
    import gguf
    from safetensors import safe_open

    from quantgrid.export import base_config
    from quantgrid.ml.models import base_info
    from quantgrid.utils import atomic_path

    config = base_config(model_dir, what="base export")
    arch = _arch(config)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir} has no .safetensors weights",
                          hint="re-save the model with save_pretrained(safe_serialization=True)")
    _writable(out)
    tmap = _tensor_map(arch)
    name = base_info(str(model_dir), config).name
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_name)
        w.add_type(gguf.GGUFType.MODEL)
        _metadata(w, gguf.Metadata(name=name, repo_url=_hf_repo(name)))
        _add_hparams(w, config)
        w.add_file_type(_file_type(outtype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(w, model_dir, config.vocab_size)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for hf_name in st.keys():
                    if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                        continue  # llama.cpp computes RoPE itself and reads a tied output from token_embd
                    name = _gguf_name(tmap, hf_name)
                    data = _maybe_permute(hf_name, st.get_tensor(hf_name).float().numpy(), arch)
                    if arch.norm_offset and hf_name.endswith("norm.weight"):
                        data = data + np.float32(arch.norm_offset)
                    data, raw = _encode(data, outtype)
                    w.add_tensor(name, data, raw_dtype=raw)
        _write(w)
    return out


def quantize(src: str | Path, out: str | Path, outtype: str, threads: int | None = None) -> Path:
    """Quantize a base GGUF with llama.cpp's own quantizer (llama-cpp-python's binding of
    llama_model_quantize): the same code as the ``llama-quantize`` tool.

    A tensor whose rows are not a multiple of the k-quant block (256) gets llama.cpp's
    fallback type (e.g. q5_0 under q4_k_m); ``gguf_tensor_types`` shows what each got.
    """
    from quantgrid.utils import atomic_path

    if outtype not in LLAMA_QUANT_OUTTYPES:
        raise ExportError(f"llama.cpp quantization does not offer {outtype!r}",
                          hint=f"choose one of {', '.join(LLAMA_QUANT_OUTTYPES)}")
    try:
        import llama_cpp
    except ImportError:
        raise ExportError(f"--outtype {outtype} uses llama.cpp's quantizer, which needs llama-cpp-python",
                          hint="pip install llama-cpp-python, or export f16 and run llama.cpp's llama-quantize") from None
    out = Path(out)
    _writable(out)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_QUANT_OUTTYPES[outtype])
    params.nthread = threads or min(4, os.cpu_count() or 1)
    with atomic_path(out) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise ExportError(f"llama.cpp could not quantize {src} to {outtype} (error {rc})",
                              hint="export --outtype f16 and run llama.cpp's llama-quantize to see its log")
    return out


def gguf_tensor_types(path: str | Path) -> dict[str, str]:
    """Tensor name -> GGML type name (F32, F16, Q8_0, Q4_K, ...) of a GGUF file."""
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def _adapter_metadata(adapter_dir: Path, base: str):
    """general.* of an adapter GGUF: its name (a release's version, else its directory),
    author and the base model, from the adapter's manifest."""
    import gguf

    manifest = _json(adapter_dir / "quantgrid.json")
    release = _json(adapter_dir / "release.json")
    name = f"quantgrid-{release['version']}" if release.get("version") else adapter_dir.resolve().name
    base_ref = manifest.get("base_model") if isinstance(manifest.get("base_model"), dict) else {}
    base_name = base_ref.get("name") or str(base)
    base_entry = {"name": base_name}
    if base_ref.get("revision"):
        base_entry["version"] = base_ref["revision"]
    if repo := _hf_repo(base_name):
        base_entry["repo_url"] = repo
    description = (manifest.get("dataset") or {}).get("description")
    return gguf.Metadata(name=name, author=manifest.get("author"), description=description,
                         base_models=[base_entry], version=release.get("version"))


def export_adapter(adapter_dir: str | Path, base_dir: str | Path, out: str | Path, outtype: str = "f32") -> Path:
    """Write a PEFT LoRA adapter as a GGUF LoRA adapter, with alpha recorded.

    ``outtype`` f32, f16 or q8_0; factors whose rows are not a multiple of the q8_0 block
    (a rank-16 B) fall back to f16.

    Tensor names follow llama.cpp: ``<base tensor name>.lora_a`` / ``.lora_b``. For the
    "llama" architecture the q/k output rows are permuted like the base weights, which
    for a product B·A means permuting the rows of B only. Only the base's config is read,
    never its weights, and never from the network.
    """
    import gguf

    from quantgrid.export import base_config
    from quantgrid.lora_files import read_config, read_weights
    from quantgrid.ml.models import base_info, check_adapter_base
    from quantgrid.utils import atomic_path

    _check_outtype(outtype, WRITER_OUTTYPES)
    adapter_dir, out = Path(adapter_dir), Path(out)
    acfg = read_config(adapter_dir, error=ExportError)
    config = base_config(base_dir, what="adapter export")
    check_adapter_base(adapter_dir, base_info(str(base_dir), config))
    arch = _arch(config)
    if acfg.get("use_dora") or acfg.get("use_rslora"):
        raise ExportError("GGUF LoRA export supports plain LoRA only (no DoRA / rsLoRA)")
    factors = read_weights(adapter_dir, acfg, error=ExportError)
    _writable(out)
    tmap = _tensor_map(arch)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_name)
        w.add_type(gguf.GGUFType.ADAPTER)
        _metadata(w, _adapter_metadata(adapter_dir, str(base_dir)))
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        alpha = float(acfg["lora_alpha"])
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for module, f in factors.items():  # sorted by module, as PEFT's tensor names sort
            # model.layers.0.self_attn.q_proj -> the base weight model.layers.0.self_attn.q_proj.weight
            hf_name = module + ".weight"
            b = f.B.numpy()
            # llama.cpp scales every module by alpha / (its rank); a module whose alpha_pattern
            # entry differs gets the ratio folded into B, so the product stays PEFT's.
            if alpha and (ratio := f.scaling / (alpha / f.rank)) != 1.0:
                b = b * np.float32(ratio)
            for which, data in (("a", f.A.numpy()), ("b", _maybe_permute(hf_name, b, arch))):
                data, raw = _encode(np.ascontiguousarray(data), outtype)
                w.add_tensor(f"{_gguf_name(tmap, hf_name)}.lora_{which}", data, raw_dtype=raw)
        _write(w)
    return out
