"""Loading the base model and tokenizer, attaching and loading LoRA adapters, and the
offline tiny base.

Real model ids (Qwen2.5, Mistral-7B, Llama-3) and the tiny base built here go through
the same code: ``load_base`` takes a Hugging Face id or a local directory.

A base is identified by ``base_fingerprint``: its architecture and shapes, not its path,
because the same tiny base lives at a different path on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantgrid.errors import AdapterMismatchError, ModelError
from quantgrid.recipe import Recipe

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig

BASE_ID_FILE = "quantgrid_base.json"
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")

# Sizes of the offline base. "test" keeps unit tests fast; "demo" is big enough
# (a few million parameters) for adapters to show a real loss difference.
TINY_SIZES: dict[str, dict[str, int]] = {
    "test": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
    "demo": dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
}

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


@dataclass(frozen=True)
class BaseInfo:
    """What identifies a base model: its name and a fingerprint of its shapes."""

    name: str
    fingerprint: str
    model_type: str
    num_layers: int
    hidden_size: int


def _config_fingerprint(cfg: Any) -> str:
    keys = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "vocab_size")
    payload = {k: getattr(cfg, k, None) for k in keys}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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


def load_config(model_id_or_path: str, revision: str | None = None):
    from transformers import AutoConfig

    _check_exists(model_id_or_path)
    try:
        return AutoConfig.from_pretrained(model_id_or_path, revision=revision)
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


def four_bit_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


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
            hint=f"quantgrid supports the Llama family: {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    device = device or default_device()
    if load_in_4bit is None:
        load_in_4bit = device.startswith("cuda") and four_bit_available()
    if load_in_4bit and not four_bit_available():
        raise ModelError("4-bit loading needs a CUDA GPU and bitsandbytes",
                         hint="pip install 'quantgrid[cuda]' on a CUDA machine, or drop --4bit")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    kwargs: dict[str, Any] = {"revision": revision, "dtype": torch_dtype}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0}
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
    cfg = d / "adapter_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("base_model_name_or_path"), None
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
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)",
                         hint="pass the directory that `quantgrid train` wrote")
    if base is not None:
        check_adapter_base(adapter_dir, base)
    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)
        return model
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)


# ---------------------------------------------------------------- offline tiny base


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE trained on ``texts``, wrapped as a fast HF tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    # Prepend <s> like Llama, so GGUF consumers (add_bos_token) see the same ids.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", add_bos_token=True)
    fast.chat_template = CHAT_TEMPLATE
    return fast


# Pre-training steps per size: brief, on purpose. A random-init base would make every
# adapter look useful (any text teaches it token statistics); a base that memorized its
# corpus would make the out-of-domain check measure forgetting of memorized text. A few
# passes give a base that knows the language and the Q&A format, with finance still to learn.
PRETRAIN_STEPS = {"test": 80, "demo": 80}


def pretrain_texts() -> list[str]:
    """General-domain text plus finance concepts (not the computed-answer templates that
    contributors and the hidden benchmark use)."""
    from quantgrid.data.finance import concepts, general_ood
    from quantgrid.data.prompts import render_text

    return [render_text(ex, "qa") for ex in [*general_ood(), *concepts()]]


def _pretrain(model, tokenizer, texts: list[str], steps: int, seed: int, seq_len: int = 128, batch: int = 8,
              lr: float = 3e-3) -> float:
    """Plain causal-LM training on ``texts`` packed into ``seq_len`` blocks; returns the last loss."""
    import torch

    stream: list[int] = []
    for t in texts:
        stream += tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]
    while len(stream) < seq_len * batch:  # a tiny corpus still fills a batch
        stream += stream
    n_blocks = max(1, len(stream) // seq_len)
    blocks = torch.tensor(stream[: n_blocks * seq_len]).view(n_blocks, seq_len)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x = blocks[torch.randint(0, n_blocks, (batch,), generator=gen)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())


def build_tiny_base(out_dir: str | Path, size: str = "test", seed: int = 0, texts: Iterable[str] | None = None,
                    pretrain_steps: int | None = None) -> Path:
    """Build a small Llama model + BPE tokenizer from a config and save it as an HF model dir.

    The tokenizer is trained on ``texts`` (default: the finance + general corpus) and the
    model is briefly pre-trained on general text (``pretrain_steps``, default per size).
    Deterministic for a given ``size`` and ``seed``. Loads with AutoModelForCausalLM and
    AutoTokenizer like any downloaded model.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from quantgrid.utils import atomic_dir

    if size not in TINY_SIZES:
        raise ModelError(f"unknown tiny base size {size!r}", hint=f"choose one of {', '.join(TINY_SIZES)}")
    dims = TINY_SIZES[size]
    if texts is None:
        from quantgrid.data.finance import tokenizer_corpus

        texts = tokenizer_corpus(seed=seed)
    tokenizer = train_tokenizer(texts, dims["vocab_size"])
    config = LlamaConfig(
        **{**dims, "vocab_size": len(tokenizer)},
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    steps = PRETRAIN_STEPS[size] if pretrain_steps is None else pretrain_steps
    if steps:
        _pretrain(model, tokenizer, pretrain_texts(), steps, seed)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BASE_ID_FILE).write_text(json.dumps({"name": f"quantgrid-tiny-{size}", "size": size, "seed": seed,
                                                     "pretrain_steps": steps}))
    return out_dir


def param_count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
