"""Merge an adapter into its base and save a plain Hugging Face model directory."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from quantgrid.errors import ExportError


def trained_in_4bit(adapter_dir: str | Path) -> bool:
    """Whether the adapter's training record says the base was loaded in 4-bit (QLoRA)."""
    cfg = Path(adapter_dir) / "training" / "train_config.yaml"
    if not cfg.is_file():
        return False
    data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
    flat = json.dumps(data).lower()
    return bool(data.get("load_in_4bit")) or '"quantization": "nf4"' in flat or '"load_in_4bit": true' in flat


def export_merged(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, *,
                  overwrite: bool = False) -> Path:
    """Write base + adapter merged into one set of weights, loadable by AutoModelForCausalLM.

    An adapter trained against a 4-bit base (QLoRA) learned a correction to the
    *dequantized* NF4 weights, so wherever bitsandbytes runs 4-bit (CUDA, or its CPU
    backend) we merge into exactly those (load in 4-bit, dequantize, merge). Elsewhere we
    merge into the full-precision weights, which differ from what the adapter saw by the
    NF4 rounding error, and say so.
    """
    from quantgrid.adapter import read_manifest
    from quantgrid.ml.models import (
        base_info,
        default_device,
        four_bit_problem,
        load_adapter,
        load_base,
        save_tokenizer,
    )
    from quantgrid.utils import atomic_dir

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if base is None:
        base = read_manifest(adapter_dir).recipe.get("base_model")
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists", hint="choose a new --out directory or pass --overwrite")
    from quantgrid.export import base_config

    base_config(base, what="merged export")  # fails at once, offline, when the base is not here
    qlora = trained_in_4bit(adapter_dir)
    device = default_device()
    problem = four_bit_problem(device) if qlora else None
    use_4bit = qlora and problem is None
    if qlora and not use_4bit:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]warning:[/] the adapter was trained on a 4-bit base but {problem}: "
                                   "merging into full-precision weights")
    model, tokenizer = load_base(str(base), load_in_4bit=use_4bit, device=device if use_4bit else "cpu",
                                 dtype="float32" if not use_4bit or device == "cpu" else None)
    if use_4bit:
        model = model.dequantize()
    model = load_adapter(model, adapter_dir, base=base_info(str(base), model.config))
    merged = model.merge_and_unload()
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            merged.save_pretrained(tmp)
            # readable by transformers 4.x too (llama.cpp's convert_hf_to_gguf.py pins it), with the
            # base's SentencePiece tokenizer.model when it has one (that converter reads it)
            save_tokenizer(tokenizer, tmp, source_dir=base if Path(str(base)).is_dir() else None)
            (tmp / "quantgrid_export.json").write_text(json.dumps(
                {"merged_from": {"base": str(base), "adapter": str(adapter_dir)}, "dequantized_4bit": use_4bit},
                indent=2))
    except PermissionError as e:
        raise ExportError(f"cannot write {out_dir}: {e.strerror}", hint="choose a writable --out directory") from None
    return out_dir
