"""Loading the base model and tokenizer, attaching and loading LoRA adapters.

Real model ids (Qwen2.5, Mistral-7B, Llama-2/3, Gemma) and the offline tiny bases
(``quantgrid.ml.tiny``) go through the same code: ``load_base`` takes a Hugging Face id or
a local directory.

A base is identified by ``base_fingerprint``: its architecture and shapes, not its path,
because the same tiny base lives at a different path on every machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantgrid import lora_files
from quantgrid.errors import AdapterMismatchError, ModelError
from quantgrid.recipe import Recipe

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig

BASE_ID_FILE = "quantgrid_base.json"
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma")

@dataclass(frozen=True)
class BaseInfo:
    """What identifies a base model: its name and a fingerprint of its shapes."""

    name: str
    fingerprint: str
    model_type: str
    num_layers: int
    hidden_size: int


def _config_fingerprint(cfg: Any) -> str:
    # One rule for every fingerprint: the hub computes it from config.json without transformers.
    from quantgrid.adapter import BaseShape

    return BaseShape.from_config(cfg.to_dict(), name="").fingerprint


def base_info(model_id_or_path: str, config: Any | None = None) -> BaseInfo:
    """Name and fingerprint of a base, from its config (loads no weights)."""
    if config is None:
        config = load_config(model_id_or_path)
    name = model_id_or_path
    id_file = Path(model_id_or_path) / BASE_ID_FILE
    if id_file.is_file():
        name = json.loads(id_file.read_text())["name"]
    return BaseInfo(name=name, fingerprint=_config_fingerprint(config), model_type=config.model_type,
                    num_layers=config.num_hidden_layers, hidden_size=config.hidden_size)


def load_config(model_id_or_path: str, revision: str | None = None, *, local_only: bool = False):
    """The base's config. ``local_only``: never touch the network (a Hugging Face id must
    be in the local cache), so a missing base fails at once instead of after retries."""
    from transformers import AutoConfig

    _check_exists(model_id_or_path)
    try:
        return AutoConfig.from_pretrained(model_id_or_path, revision=revision, local_files_only=local_only)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"cannot load base model {model_id_or_path!r}: {str(e).splitlines()[0]}",
            hint="give a local model directory, or a Hugging Face id that is in your cache "
                 "(`quantgrid base tiny DIR` builds an offline one)",
        ) from None


def _check_exists(model_id_or_path: str) -> None:
    p = Path(model_id_or_path)
    looks_like_path = model_id_or_path.startswith((".", "/", "~")) or p.exists() or model_id_or_path.count("/") > 1
    if looks_like_path and not (p.expanduser() / "config.json").is_file():
        raise ModelError(
            f"base model path {model_id_or_path!r} is not a model directory (no config.json there)",
            hint="check the path, or build an offline base with `quantgrid base tiny DIR`",
        )


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def four_bit_available(device: str | None = None) -> bool:
    """Whether NF4 (QLoRA) loading works on ``device`` (default: CUDA if present):
    bitsandbytes imports and has 4-bit kernels for that device. Its CPU backend counts
    (bitsandbytes >= 0.46), so the 4-bit path is testable without a GPU."""
    return four_bit_problem(device) is None


def four_bit_problem(device: str | None = None) -> str | None:
    """Why 4-bit loading cannot work on ``device``, or None if it can."""
    import importlib.util

    import torch

    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        import bitsandbytes as bnb
    except Exception as e:  # a broken native library raises anything from OSError to RuntimeError
        return f"bitsandbytes does not load: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if device.startswith("cuda"):
        return None
    if device == "cpu" and importlib.util.find_spec("bitsandbytes.backends.cpu") is not None:
        return None
    return f"bitsandbytes {getattr(bnb, '__version__', '?')} has no 4-bit kernels for {device!r}"


def save_tokenizer(tokenizer, out_dir: str | Path, source_dir: str | Path | None = None) -> None:
    """Save a tokenizer so that transformers 4.x loads it as well as 5, and llama.cpp's
    converter finds what it reads.

    transformers 5 records ``tokenizer_class: TokenizersBackend`` for a generic fast
    tokenizer and a list under ``extra_special_tokens``; 4.x knows neither (it has
    PreTrainedTokenizerFast, and a dict there). A SentencePiece ``tokenizer.model`` is not
    re-written by transformers 5, so it is copied from ``source_dir``.
    """
    import shutil

    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend"):
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.get("extra_special_tokens")
    if isinstance(extra, list):
        del cfg["extra_special_tokens"]
        named = {str(cfg.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        if more := [t for t in extra if str(t) not in named]:
            cfg["additional_special_tokens"] = more
    cfg.pop("backend", None)
    cfg.pop("vocab_file", None)  # transformers 5 records the path it read tokenizer.model from: meaningless here
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if source_dir is not None and (Path(source_dir) / "tokenizer.model").is_file() \
            and not (out_dir / "tokenizer.model").exists():
        shutil.copyfile(Path(source_dir) / "tokenizer.model", out_dir / "tokenizer.model")


def load_tokenizer(model_id_or_path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    _check_exists(model_id_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(model_id_or_path, revision=revision)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of {model_id_or_path!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(
    model_id_or_path: str,
    *,
    revision: str | None = None,
    load_in_4bit: bool | None = None,
    dtype: str | None = None,
    device: str | None = None,
):
    """Load (model, tokenizer). ``load_in_4bit=None`` means: 4-bit NF4 when CUDA and
    bitsandbytes are there (QLoRA), full precision otherwise.

    ``dtype`` is "float32", "bfloat16" or "float16"; the default is float32 on CPU (exact
    and fast enough for small models) and bfloat16 on CUDA.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = load_config(model_id_or_path, revision)
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"architecture {config.model_type!r} is not supported",
            hint=f"quantgrid supports these architectures: {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    device = device or default_device()
    if load_in_4bit is None:
        # QLoRA is the default on CUDA. Without 4-bit support there, fail rather than
        # quietly load bf16: a 7B base in bf16 does not fit the GPU the recipe promises.
        load_in_4bit = device.startswith("cuda")
    if load_in_4bit and (problem := four_bit_problem(device)):
        raise ModelError(f"4-bit (QLoRA) loading on {device} is not possible: {problem}",
                         hint="pip install 'quantgrid[ml]' on Linux x86_64 or Windows (it brings bitsandbytes), "
                              "or pass --no-4bit to train in full precision")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    kwargs: dict[str, Any] = {"revision": revision, "dtype": torch_dtype}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0} if device.startswith("cuda") else {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_id_or_path, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise _oom_error() from None
    if not load_in_4bit:
        model.to(device)
    model.eval()
    model.config.use_cache = False
    return model, load_tokenizer(model_id_or_path, revision)


def _oom_error() -> ModelError:
    from quantgrid.errors import OutOfMemoryError

    return OutOfMemoryError("out of memory", hint="use a smaller --batch-size (with a larger --grad-accum), "
                            "a shorter --max-seq-length, or load the base in 4-bit on a CUDA GPU")


# ---------------------------------------------------------------- adapters


def lora_config(recipe: Recipe, *, inference: bool = False) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        target_modules=list(recipe.lora.target_modules),
        lora_dropout=0.0 if inference else recipe.lora.dropout,
        bias=recipe.lora.bias,
        task_type="CAUSAL_LM",
        inference_mode=inference,
    )


def attach_lora(model, recipe: Recipe, adapter_name: str = "default"):
    """Wrap ``model`` in a PEFT model with a fresh, trainable LoRA from the recipe."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(recipe), adapter_name=adapter_name)


def read_adapter_base(adapter_dir: str | Path) -> tuple[str | None, str | None]:
    """(base name, base fingerprint) an adapter says it was trained for."""
    d = Path(adapter_dir)
    manifest = d / "quantgrid.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        base = m.get("base_model") or {}
        if isinstance(base, dict):
            return base.get("name"), base.get("fingerprint")
        return str(base), m.get("base_fingerprint")
    if (d / lora_files.CONFIG).is_file():
        return lora_files.read_config(d).get("base_model_name_or_path"), None
    return None, None


def check_adapter_base(adapter_dir: str | Path, base: BaseInfo) -> None:
    """Raise AdapterMismatchError, naming both bases, if the adapter was trained for another base."""
    name, fingerprint = read_adapter_base(adapter_dir)
    if fingerprint is not None and fingerprint != base.fingerprint:
        raise AdapterMismatchError(
            f"adapter {str(adapter_dir)!r} was trained for base {name!r}, but the base is {base.name!r} "
            f"(fingerprints {fingerprint} != {base.fingerprint})",
            hint="use the base the adapter was trained on (see its quantgrid.json), or retrain the adapter")


def load_adapter(model, adapter_dir: str | Path, adapter_name: str = "default", *, trainable: bool = False,
                 base: BaseInfo | None = None):
    """Attach a saved adapter to ``model`` (a plain model or an existing PeftModel).

    ``base`` enables the mismatch check; the adapter's own loader hints (auto_mapping,
    base_model_name_or_path) are never acted on, since PEFT is given our model object.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / lora_files.CONFIG).is_file():
        raise ModelError(f"{adapter_dir} is not an adapter directory (no {lora_files.CONFIG})",
                         hint="pass the directory that `quantgrid train` wrote")
    if base is not None:
        check_adapter_base(adapter_dir, base)
    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)
        return model
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)


def param_count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# The offline tiny bases live in quantgrid.ml.tiny; these names stay importable from here.
from quantgrid.ml.tiny import (  # noqa: E402
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TINY_FAMILIES,
    TINY_SIZES,
    build_tiny_base,
    train_tokenizer,
)

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TINY_FAMILIES", "TINY_SIZES", "build_tiny_base", "train_tokenizer"]
