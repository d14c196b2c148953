"""CLI: `quantgrid export merged|gguf|ollama`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from quantgrid.cli._common import console, err_console
from quantgrid.errors import ExportError

export_app = typer.Typer(help="Export an adapter or base: merged HF model, GGUF (llama.cpp), Ollama Modelfile.",
                         no_args_is_help=True)

OUTTYPE_HELP = "Tensor type for 2-D weights: f32, f16 or q8_0 (norms stay f32)."


def _base_for(adapter: Path, base: str | None) -> str:
    """The base an adapter was trained on: --base, else its manifest, else its PEFT config."""
    if base:
        return base
    manifest = adapter / "quantgrid.json"
    if manifest.is_file():
        recipe = json.loads(manifest.read_text()).get("recipe") or {}
        if recipe.get("base_model"):
            return recipe["base_model"]
    cfg = adapter / "adapter_config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("base_model_name_or_path"):
        return json.loads(cfg.read_text())["base_model_name_or_path"]
    raise ExportError(f"cannot tell which base {adapter} was trained on", hint="pass --base ID_OR_PATH")


@export_app.command("merged")
def merged(
    adapter: Path = typer.Option(..., "--adapter", help="Adapter directory to merge."),
    out: Path = typer.Option(..., "--out", help="Output Hugging Face model directory."),
    base: str = typer.Option(None, "--base", help="Base model id or path (default: the adapter's recipe)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
) -> None:
    """Merge the adapter into the base weights and save a plain HF model directory."""
    from quantgrid.export.merged import export_merged

    path = export_merged(adapter, out, _base_for(adapter, base), overwrite=overwrite)
    console.print(f"merged model written to [bold]{path}[/]")


@export_app.command("gguf")
def gguf_cmd(
    out: Path = typer.Option(..., "--out", help="Output .gguf file."),
    base: str = typer.Option(None, "--base", help="Base model id or path. Alone: export the base."),
    adapter: Path = typer.Option(None, "--adapter", help="Adapter directory: export it as a GGUF LoRA adapter."),
    outtype: str = typer.Option("f16", "--outtype", help=OUTTYPE_HELP),
) -> None:
    """Write a base model, or a LoRA adapter, as GGUF for llama.cpp and Ollama."""
    from quantgrid.export.gguf import export_adapter, export_base

    if adapter is None and base is None:
        raise ExportError("nothing to export", hint="pass --base ID_OR_PATH for a model or --adapter DIR for an adapter")
    if adapter is not None:
        path = export_adapter(adapter, _base_for(adapter, base), out, outtype)
    else:
        path = export_base(base, out, outtype)
    console.print(f"GGUF written to [bold]{path}[/] ({path.stat().st_size / 1e6:.1f} MB)")


@export_app.command("ollama")
def ollama_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="Adapter (or release) directory."),
    out: Path = typer.Option(..., "--out", help="Output directory for Modelfile, adapter.gguf (and base.gguf)."),
    base: str = typer.Option(None, "--base", help="Base model id or path (default: the adapter's recipe)."),
    from_: str = typer.Option(None, "--from", help="FROM line: an Ollama model name or a base GGUF path. "
                              "Default: export the base to OUT/base.gguf."),
    outtype: str = typer.Option("f16", "--outtype", help=OUTTYPE_HELP),
    name: str = typer.Option("quantgrid", "--name", help="Model name for the printed `ollama create` command."),
) -> None:
    """Write an Ollama Modelfile (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER) plus the GGUF files."""
    from quantgrid.export.gguf import export_adapter, export_base
    from quantgrid.export.merged import trained_in_4bit
    from quantgrid.export.ollama import modelfile_for, write_modelfile
    from quantgrid.ml.models import load_tokenizer
    from quantgrid.recipe import Recipe

    base_id = _base_for(adapter, base)
    out.mkdir(parents=True, exist_ok=True)
    # The adapter stays f16 whatever the base's type: Ollama advises non-quantized adapters.
    export_adapter(adapter, base_id, out / "adapter.gguf", "f16")
    if from_ is None:
        export_base(base_id, out / "base.gguf", outtype)
        from_ = "./base.gguf"
    manifest = adapter / "quantgrid.json"
    recipe = Recipe.from_dict(json.loads(manifest.read_text())["recipe"]) if manifest.is_file() else Recipe(
        base_model=base_id)
    write_modelfile(out / "Modelfile", modelfile_for(recipe, from_=from_, adapter="./adapter.gguf",
                                                     tokenizer=load_tokenizer(base_id)))
    if trained_in_4bit(adapter):
        err_console.print("[yellow]warning:[/] this adapter was trained on a 4-bit base; Ollama advises "
                          "non-quantized adapters: expect small differences from training-time behaviour")
    console.print(f"Modelfile written to [bold]{out / 'Modelfile'}[/]")
    console.print(f"run: [bold]cd {out} && ollama create {name} -f Modelfile[/]")


@export_app.command("hf")
def hf_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="Adapter directory to export."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hugging Face repo id, e.g. your-name/quantgrid-sec-filings."),
    out: Path = typer.Option(..., "--out", help="Output folder (then: huggingface-cli upload REPO_ID OUT)."),
    license: str = typer.Option(None, "--license", help="Licence id for the card (default: the adapter card's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Write a folder ready for `huggingface-cli upload`: adapter, tokenizer/chat template, model card."""
    from quantgrid.export.hf import HFExport, export_hf

    s = HFExport(adapter=adapter, repo_id=repo_id, out=out, license=license, overwrite=overwrite)
    path, written, left_out = export_hf(s)
    console.print(f"Hugging Face folder written to {path}: {', '.join(written)}", markup=False)
    if left_out:
        console.print("left out: " + ", ".join(f"{k} ({v})" for k, v in sorted(left_out.items())), markup=False)
    console.print(f"upload it with: huggingface-cli upload {s.repo_id} {path}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
