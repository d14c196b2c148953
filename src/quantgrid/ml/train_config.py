"""The settings of one training run: one pydantic schema for the Python API, the CLI
flags and ``--config train.yaml`` (DESIGN §4.1).

A run's settings are the recipe (what the hub checks: LoRA shape, training defaults,
prompt template) plus ``RunSettings`` (where the data and output are, steps, backend).
Every entry point passes flat names (``lora_rank=8``, ``--lora-rank 8``, ``lora_rank: 8``);
``SETTINGS`` maps them to their place, and validation errors name the user's flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantgrid.errors import ConfigError
from quantgrid.recipe import Recipe, format_validation_error
from quantgrid.utils import load_yaml_mapping


class RunSettings(BaseModel):
    """Everything about one run that is not the recipe (the recipe is what the hub checks)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field(..., description="training data: a JSON/JSONL file or builtin:NAME")
    output_dir: str = Field(..., description="where the adapter directory is written")
    base_model_path: str | None = Field(None, description="where the base weights load from (default: recipe.base_model)")
    eval_dataset: str | None = Field(None, description="held-out data; default: a split of the training data")
    data_format: str | None = None
    lenient: bool = False
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    save_steps: int = Field(100, ge=1, description="checkpoint every N optimizer steps")
    resume: bool = False
    overwrite: bool = False
    include_dataset: bool = False
    keep_checkpoints: bool = False
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    load_in_4bit: bool | None = Field(None, description="default: on for CUDA + bitsandbytes (QLoRA)")
    device: str | None = None
    author: str | None = None
    dataset_description: str | None = None
    log_every: int = Field(10, ge=1)
    progress: Literal["auto", "rich", "plain", "none"] = "auto"


class TrainConfig(BaseModel):
    """The exact resolved settings of a run; saved as ``training/train_config.yaml``."""

    model_config = ConfigDict(extra="forbid")

    recipe: Recipe
    run: RunSettings

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# Flat names (Python keyword arguments, CLI flags with "-" for "_", keys of --config)
# -> where they live in TrainConfig. One table, so every entry point agrees.
SETTINGS: dict[str, str] = {
    "lora_rank": "recipe.lora.r", "lora_alpha": "recipe.lora.alpha", "target_modules": "recipe.lora.target_modules",
    "lora_dropout": "recipe.lora.dropout", "lora_bias": "recipe.lora.bias", "base_model": "recipe.base_model",
    "prompt_template": "recipe.prompt_template",
    "system_prompt": "recipe.system_prompt", "base_revision": "recipe.base_revision",
    **{k: f"recipe.training.{k}" for k in ("epochs", "batch_size", "grad_accum", "lr", "warmup_ratio", "schedule",
                                            "weight_decay", "max_grad_norm", "max_seq_length", "seed",
                                            "eval_fraction", "early_stopping_patience")},
    "num_epochs": "recipe.training.epochs", "learning_rate": "recipe.training.lr",
    **{k: f"run.{k}" for k in RunSettings.model_fields},
    "dataset_path": "run.dataset", "output": "run.output_dir", "format": "run.data_format",
}
FLAG_NAMES = {v: "--" + k.replace("_", "-") for k, v in reversed(list(SETTINGS.items()))}
FLAG_NAMES.update({"recipe.training.epochs": "--epochs", "recipe.training.lr": "--lr", "run.dataset": "--dataset",
                   "run.output_dir": "--output", "run.base_model_path": "--base-model", "run.data_format": "--format"})


def resolve_config(recipe: Recipe, overrides: dict[str, Any], base_model: str | None = None) -> TrainConfig:
    """recipe + flat overrides -> a validated TrainConfig; errors name the user's flag."""
    tree: dict[str, Any] = {"recipe": recipe.model_dump(mode="json"), "run": {}}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in SETTINGS:
            raise ConfigError(f"unknown training setting {name!r}",
                              hint=f"known settings: {', '.join(sorted(SETTINGS))}")
        node = tree
        *parents, leaf = SETTINGS[name].split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if base_model:
        tree["run"]["base_model_path"] = base_model
    for required in ("dataset", "output_dir"):
        if not tree["run"].get(required):
            flag = FLAG_NAMES[f"run.{required}"]
            raise ConfigError(f"no {required.replace('_', ' ')} given",
                              hint=f"pass {flag} (or set it in --config; "
                                   f"{'dataset_path' if required == 'dataset' else required}= in Python)")
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"invalid training settings: {format_validation_error(e, FLAG_NAMES)}",
                          hint="fix the value named above (see `quantgrid train --help`)") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A train.yaml -> flat overrides. It may be a saved ``train_config.yaml`` ({recipe, run})
    or flat keys (``dataset: x.jsonl``, ``lora_rank: 8``), or a mix."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: {p} not found", hint="pass a YAML file, e.g. a previous run's training/train_config.yaml")
    data = load_yaml_mapping(p, f"--config {p}")
    flat: dict[str, Any] = {}
    recipe = data.pop("recipe", None) or {}
    for section, prefix in (("lora", "recipe.lora."), ("training", "recipe.training.")):
        for k, v in (recipe.pop(section, None) or {}).items():
            flat[_flat_name(prefix + k, p)] = v
    for k, v in recipe.items():
        flat[_flat_name("recipe." + k, p)] = v
    for k, v in (data.pop("run", None) or {}).items():
        flat[k] = v
    flat.update(data)
    return flat


def _flat_name(path: str, source: Path) -> str:
    for k, v in SETTINGS.items():
        if v == path:
            return k
    raise ConfigError(f"--config {source}: unknown setting {path!r}")
