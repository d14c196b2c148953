"""CLI: ``quantgrid train`` — LocoLLM's flags on top of the standardized recipe.

Settings come from three places, later ones winning: the recipe (built-in, ``--recipe
FILE`` or the hub's with ``--hub URL``), ``--config train.yaml``, then the flags.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import typer

from quantgrid.cli._common import console, report_error


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


def train(
    ctx: typer.Context,
    base_model: str = typer.Option(None, "--base-model", help="Base model: a Hugging Face id or a local directory "
                                   "(default: the recipe's base)"),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Training data: JSON/JSONL file or builtin:NAME "
                                "(see `quantgrid data list`)."),
    output: Path = typer.Option(None, "--output", "-o", help="Adapter directory to write."),
    lora_rank: int = typer.Option(None, "--lora-rank", help="LoRA rank (recipe: 16). Other values are allowed "
                                  "locally; the adapter is then marked non-standard."),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA alpha (recipe: 32) (non-standard if changed)."),
    target_modules: str = typer.Option(None, "--target-modules", help="Comma-separated LoRA targets "
                                       "(recipe: q_proj,k_proj,v_proj,o_proj) (non-standard if changed)."),
    epochs: float = typer.Option(None, "--epochs", help="Epochs (recipe: 3)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (recipe: 2e-4)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Examples per micro-batch (recipe: 4)."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step (recipe: 4)."),
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="Longest example in tokens (recipe: 1024)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    seed: int = typer.Option(None, "--seed", help="Random seed (recipe: 42)."),
    eval_dataset: str = typer.Option(None, "--eval-dataset", help="Held-out data for the per-epoch eval loss "
                                     "(default: a split of --dataset)."),
    early_stopping: int = typer.Option(None, "--early-stopping", help="Stop after N epochs without eval improvement."),
    save_steps: int = typer.Option(None, "--save-steps", help="Checkpoint every N steps (100) (and each epoch end)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML of settings (flat keys like `lora_rank: 8`, "
                                "or a previous run's training/train_config.yaml)."),
    recipe_file: Path = typer.Option(None, "--recipe", help="Recipe YAML to start from (`quantgrid recipe show`)."),
    hub: str = typer.Option(None, "--hub", help="Use the recipe published by this hub URL."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of this --output."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output even if it is not a quantgrid adapter."),
    include_dataset: bool = typer.Option(False, "--include-dataset", help="Copy the training data into "
                                         "training/dataset.jsonl (it is never part of a submission)."),
    backend: str = typer.Option(None, "--backend", help="auto | hf | unsloth (auto: Unsloth on CUDA when installed)."),
    four_bit: bool = typer.Option(None, "--4bit/--no-4bit", help="Load the base in 4-bit NF4 (QLoRA) "
                                  "(default: on for CUDA with bitsandbytes)."),
    dtype: str = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 for the base weights."),
    data_format: str = typer.Option(None, "--format", help="Dataset schema, if auto-detection guesses wrong."),
    lenient: bool = typer.Option(False, "--lenient", help="Skip bad records instead of stopping at the first."),
    author: str = typer.Option(None, "--author", help="Author name for the manifest."),
    description: str = typer.Option(None, "--description", help="Dataset description for the manifest (no data)."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep <output>.checkpoints/ at the end."),
    progress: str = typer.Option(None, "--progress", help="auto | rich | plain | none (auto: a bar on a terminal)."),
) -> None:
    """Train a LoRA adapter on your data with the standardized recipe.

    Example: quantgrid train --base-model ./tiny --dataset my_sec_data.jsonl --output ./my_sec_adapter
    """
    from quantgrid.ml.train_config import load_config_file
    from quantgrid.ml.trainer import QuantGridTrainer, TrainingInterrupted

    _quiet_libraries()
    flat: dict[str, Any] = load_config_file(config) if config else {}
    given = dict(dataset=dataset, output_dir=str(output) if output else None, lora_rank=lora_rank,
                 lora_alpha=lora_alpha, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                 max_seq_length=max_seq_length, max_steps=max_steps, seed=seed, eval_dataset=eval_dataset,
                 early_stopping_patience=early_stopping, save_steps=save_steps, backend=backend,
                 load_in_4bit=four_bit, dtype=dtype, data_format=data_format, author=author,
                 dataset_description=description, progress=progress,
                 target_modules=[m.strip() for m in target_modules.split(",") if m.strip()] if target_modules else None)
    flat.update({k: v for k, v in given.items() if v is not None})
    for name, on in (("resume", resume), ("overwrite", overwrite), ("include_dataset", include_dataset),
                     ("lenient", lenient), ("keep_checkpoints", keep_checkpoints)):
        if on:
            flat[name] = True
    # A saved train_config.yaml names the base twice (recipe name, run path): the path wins.
    base = base_model or flat.pop("base_model_path", None) or flat.pop("base_model", None)
    flat.pop("base_model", None)
    flat.pop("base_model_path", None)
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


def _same_command(ctx: click.Context) -> str:
    """The command line that was run (its non-default options), to print after Ctrl-C."""
    words = ["quantgrid", "train"]
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if not isinstance(p, click.Option) or p.name == "resume" or value is None or value == p.default:
            continue
        if p.is_flag:
            words.append(p.opts[0] if value else (p.secondary_opts or [p.opts[0]])[0])
        else:
            words += [p.opts[0], str(value)]
    return shlex.join(words)


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)
