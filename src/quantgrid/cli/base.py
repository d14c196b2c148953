"""CLI: ``quantgrid base`` — build the offline tiny base, describe a base model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quantgrid.cli._common import console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.ml.tiny_settings import TinyBaseSettings
from quantgrid.settings import settings_of, validate

base_app = typer.Typer(help="Base models: build the offline tiny base, show what identifies a base.",
                       no_args_is_help=True)


@base_app.command("tiny")
@settings_command(Flags(settings_of(TinyBaseSettings)))
def tiny(
    out: Annotated[Path, typer.Argument(help="Directory to write the model to (an ordinary Hugging Face model dir).")],
    **given: Any,
) -> None:
    """Build a small model + tokenizer of a supported base family from a config, offline (no download)."""
    from quantgrid.ml.models import base_info, build_tiny_base, load_config, param_count

    s = validate(TinyBaseSettings, given, settings_of(TinyBaseSettings), what="base tiny option",
                 hint="see `quantgrid base tiny --help`")
    size, family = s.size.value, s.family.value
    with console.status(f"building the {size} {family} base in {out}"):
        path = build_tiny_base(out, size=size, seed=s.seed, family=family)
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
