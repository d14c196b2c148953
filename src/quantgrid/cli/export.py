"""CLI: `quantgrid export merged|gguf|ollama`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.markup import escape

from quantgrid import lora_files
from quantgrid.cli._common import console, err_console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.errors import ConfigError, ExportError
from quantgrid.export.settings import GGUFExport, MergedExport, OllamaExport
from quantgrid.settings import settings_of, validate

export_app = typer.Typer(help="Export an adapter or base: merged HF model, GGUF (llama.cpp), Ollama Modelfile.",
                         no_args_is_help=True)


def _settings(model: type[BaseModel], command: str, given: dict[str, Any]) -> Any:
    return validate(model, given, settings_of(model), what=f"export {command} settings",
                    hint=f"see `quantgrid export {command} --help`")


def _base_for(adapter: Path, base: str | None) -> str:
    """The base an adapter was trained on: --base, else its manifest, else its PEFT config."""
    if base:
        return base
    manifest = adapter / "quantgrid.json"
    if manifest.is_file():
        recipe = json.loads(manifest.read_text()).get("recipe") or {}
        if recipe.get("base_model"):
            return recipe["base_model"]
    if (adapter / lora_files.CONFIG).is_file():
        named = lora_files.read_config(adapter, error=ExportError).get("base_model_name_or_path")
        if named:
            return named
    raise ExportError(f"cannot tell which base {adapter} was trained on", hint="pass --base ID_OR_PATH")


@export_app.command("merged")
@settings_command(Flags(settings_of(MergedExport)))
def merged(**given: Any) -> None:
    """Merge the adapter into the base weights and save a plain HF model directory."""
    from quantgrid.export.merged import export_merged

    s = _settings(MergedExport, "merged", given)
    path = export_merged(s.adapter, s.out, _base_for(s.adapter, s.base), overwrite=s.overwrite)
    console.print(f"merged model written to [bold]{escape(str(path))}[/]")


@export_app.command("gguf")
@settings_command(Flags(settings_of(GGUFExport)))
def gguf_cmd(**given: Any) -> None:
    """Write a base model, or a LoRA adapter, as GGUF for llama.cpp and Ollama."""
    from quantgrid.export.gguf import export_adapter, export_base

    s = _settings(GGUFExport, "gguf", given)
    out, base, adapter, outtype = s.out, s.base, s.adapter, s.outtype

    if adapter is None and base is None:
        raise ConfigError("nothing to export", hint="pass --base ID_OR_PATH for a model or --adapter DIR for an adapter")
    if adapter is not None:
        path = export_adapter(adapter, _base_for(adapter, base), out, outtype)
    else:
        path = export_base(base, out, outtype)
    console.print(f"GGUF written to [bold]{escape(str(path))}[/] ({path.stat().st_size / 1e6:.1f} MB)")


@export_app.command("ollama")
@settings_command(Flags(settings_of(OllamaExport)))
def ollama_cmd(**given: Any) -> None:
    """Write an Ollama Modelfile (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER) plus the GGUF files."""
    from quantgrid.export.gguf import export_adapter, export_base
    from quantgrid.export.merged import trained_in_4bit
    from quantgrid.export.ollama import modelfile_for, write_modelfile
    from quantgrid.export.settings import ModelfileSettings
    from quantgrid.ml.models import load_tokenizer
    from quantgrid.recipe import Recipe

    s = _settings(OllamaExport, "ollama", given)
    adapter, out, from_, outtype, name = s.adapter, s.out, s.from_model, s.outtype, s.name
    base_id = _base_for(adapter, s.base)
    out.mkdir(parents=True, exist_ok=True)
    # The adapter stays f16 whatever the base's type: Ollama advises non-quantized adapters.
    export_adapter(adapter, base_id, out / "adapter.gguf", "f16")
    if from_ is None:
        export_base(base_id, out / "base.gguf", outtype)
        from_ = "./base.gguf"
    manifest = adapter / "quantgrid.json"
    recipe = Recipe.from_dict(json.loads(manifest.read_text())["recipe"]) if manifest.is_file() else Recipe(
        base_model=base_id)
    write_modelfile(out / "Modelfile", modelfile_for(
        recipe, from_=from_, adapter="./adapter.gguf", tokenizer=load_tokenizer(base_id),
        settings=ModelfileSettings(**s.model_dump(include=set(ModelfileSettings.model_fields)))))
    if trained_in_4bit(adapter):
        err_console.print("[yellow]warning:[/] this adapter was trained on a 4-bit base; Ollama advises "
                          "non-quantized adapters: expect small differences from training-time behaviour")
    console.print(f"Modelfile written to [bold]{escape(str(out / 'Modelfile'))}[/]")
    console.print(f"run: [bold]{escape(f'cd {out} && ollama create {name} -f Modelfile')}[/]")


def _hf_settings():
    from quantgrid.export.hf import HFExport

    return HFExport


@export_app.command("hf")
@settings_command(Flags(settings_of(_hf_settings())))
def hf_cmd(**given: Any) -> None:
    """Write a folder ready for `huggingface-cli upload`: adapter, tokenizer/chat template, model card."""
    from quantgrid.export.hf import HFExport, export_hf

    s = _settings(HFExport, "hf", given)
    path, written, left_out = export_hf(s)
    console.print(f"Hugging Face folder written to [bold]{escape(str(path))}[/]: {', '.join(written)}")
    if left_out:
        console.print(f"left out: {escape(', '.join(f'{k} ({v})' for k, v in sorted(left_out.items())))}")
    console.print(f"upload it with: huggingface-cli upload {escape(s.repo_id)} {escape(str(path))}")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
