"""CLI: ``quantgrid base`` — build the offline tiny base, describe a base model."""

from __future__ import annotations

from pathlib import Path

import typer

from quantgrid.cli._common import console

base_app = typer.Typer(help="Base models: build the offline tiny base, show what identifies a base.",
                       no_args_is_help=True)


@base_app.command("tiny")
def tiny(
    out: Path = typer.Argument(..., help="Directory to write the model to (an ordinary Hugging Face model dir)."),
    size: str = typer.Option("test", "--size", help="test (2 layers, 64 wide: for unit tests) or "
                             "demo (4 layers, 256 wide: big enough to show adapters learning)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same size and seed give the same model."),
) -> None:
    """Build a small Llama model + BPE tokenizer from a config, offline (no download)."""
    from quantgrid.ml.models import TINY_SIZES, base_info, build_tiny_base, load_config, param_count

    if size not in TINY_SIZES:
        from quantgrid.errors import ConfigError

        raise ConfigError(f"--size {size!r} is not a tiny base size", hint=f"choose one of {', '.join(TINY_SIZES)}")
    with console.status(f"building the {size} base in {out}"):
        path = build_tiny_base(out, size=size, seed=seed)
    info = base_info(str(path))
    cfg = load_config(str(path))
    from transformers import AutoModelForCausalLM

    n = param_count(AutoModelForCausalLM.from_config(cfg))
    console.print(f"Built {info.name} ({n / 1e6:.1f}M parameters, fingerprint {info.fingerprint}) in {path}",
                  highlight=False)


@base_app.command("info")
def info(model: str = typer.Argument(..., help="A Hugging Face id (in your cache) or a local model directory.")) -> None:
    """Show a base model's name, fingerprint and shapes (reads its config only, no weights)."""
    from quantgrid.ml.models import base_info

    b = base_info(model)
    for key, value in (("name", b.name), ("fingerprint", b.fingerprint), ("architecture", b.model_type),
                       ("layers", b.num_layers), ("hidden size", b.hidden_size)):
        console.print(f"{key:>12}: {value}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(base_app, name="base")
