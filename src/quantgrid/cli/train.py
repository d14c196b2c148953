"""CLI: ``quantgrid train`` — LocoLLM's flags on top of the standardized recipe.

Settings come from three places, later ones winning: the recipe (built-in, ``--recipe
FILE`` or the hub's with ``--hub URL``), ``--config train.yaml``, then the flags.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, Field

from quantgrid.cli._common import console, report_error
from quantgrid.cli.options import Flags, settings_command
from quantgrid.ml.train_config import train_settings
from quantgrid.settings import settings_of


def train_settings_cli():
    return {k: s for k, s in train_settings().items() if k != "base_model"}


def _recipe(hub: str | None, recipe_file: Path | None):
    from quantgrid.recipe import Recipe

    if hub and recipe_file:
        from quantgrid.errors import ConfigError

        raise ConfigError("--hub and --recipe both give a recipe", hint="pass one of them")
    if hub:
        from quantgrid.hub.client import HubClient

        with HubClient(hub) as client:
            return client.get_recipe()
    if recipe_file:
        return Recipe.load(recipe_file)
    return Recipe()


class TrainSources(BaseModel):
    """Where the settings start from; the flags override them."""

    config: Path | None = Field(None, description="YAML of settings (flat keys like `lora_rank: 8`, or a previous "
                                "run's training/train_config.yaml)", json_schema_extra={"short": "-c"})
    recipe: Path | None = Field(None, description="recipe YAML to start from (`quantgrid recipe show`)")
    hub: str | None = Field(None, description="use the recipe published by this hub URL")


# The recipe's base_model is not a flag: --base-model sets the run's base, and the recipe
# records that base's name (the trainer derives it).
TRAIN_FLAGS = (
    Flags(settings_of(TrainSources), panel="Settings from files"),
    Flags(train_settings_cli(), panels={"recipe": "Recipe", "recipe.lora": "LoRA (recipe)",
                                        "recipe.training": "Training (recipe)"}, panel="Run"),
)


@settings_command(*TRAIN_FLAGS)
def train(ctx: typer.Context, **given: Any) -> None:
    """Train a LoRA adapter on your data with the standardized recipe.

    Example: quantgrid train --base-model ./tiny --dataset my_sec_data.jsonl --output ./my_sec_adapter
    """
    from quantgrid.ml.train_config import load_config_file
    from quantgrid.ml.trainer import QuantGridTrainer, TrainingInterrupted

    _quiet_libraries()
    config, recipe_file, hub = given.pop("config", None), given.pop("recipe", None), given.pop("hub", None)
    flat: dict[str, Any] = load_config_file(config) if config else {}
    # A saved train_config.yaml names the base twice (recipe name, run path): the path wins.
    base = given.pop("base_model_path", None) or flat.pop("base_model_path", None) or flat.pop("base_model", None)
    flat.pop("base_model", None)
    flat.update(given)
    recipe = _recipe(hub, recipe_file)
    trainer = QuantGridTrainer(base_model=base, recipe=recipe, console=console)
    try:
        trainer.train(**flat)
    except TrainingInterrupted as e:
        if "--resume" in (e.hint or ""):
            e.hint = f"resume with: {_same_command(ctx)} --resume"
        report_error(e)
        raise typer.Exit(130) from None


def _quiet_libraries() -> None:
    """Our progress display is the one the user reads: no weight-loading bars or library
    deprecation chatter from transformers/PEFT in between (this process only)."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")


def _same_command(ctx: typer.Context) -> str:
    """The command line that was run (the options it set), to print after Ctrl-C."""
    words = ["quantgrid", "train"]
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if getattr(p, "param_type_name", "") != "option" or p.name == "resume" or value in (None, [], ()):
            continue
        if p.is_flag:
            words.append(p.opts[0] if value else (p.secondary_opts or [p.opts[0]])[0])
        elif isinstance(value, (list, tuple)):
            for v in value:
                words += [p.opts[0], str(v)]
        else:
            words += [p.opts[0], str(value)]
    return shlex.join(words)


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)
