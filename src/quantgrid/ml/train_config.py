"""The settings of one training run: one pydantic schema for the Python API, the CLI
flags and ``--config train.yaml``.

A run's settings are the recipe (what the hub checks: LoRA shape, training defaults,
prompt template) plus ``RunSettings`` (where the data and output are, steps, backend).
Every entry point passes flat names (``lora_rank=8``, ``--lora-rank 8``, ``lora_rank: 8``);
the fields declare them (:mod:`quantgrid.settings`), so every entry point agrees and
validation errors name the user's flag. The Hugging Face ``TrainingArguments`` names
(``learning_rate``, ``num_train_epochs``, ``logging_steps``...) are accepted too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from quantgrid.errors import ConfigError, ConfigFileError
from quantgrid.recipe import Recipe
from quantgrid.settings import Setting, flatten, nest, settings_of, validate
from quantgrid.utils import load_yaml_mapping


class RunSettings(BaseModel):
    """Everything about one run that is not the recipe (the recipe is what the hub checks)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field(..., description="training data: a JSON/JSONL file or builtin:NAME (see `quantgrid data list`)",
                         validation_alias=AliasChoices("dataset", "dataset_path"), json_schema_extra={"short": "-d"})
    output_dir: str = Field(..., description="adapter directory to write",
                            validation_alias=AliasChoices("output_dir", "output"),
                            json_schema_extra={"flag": "--output", "short": "-o"})
    base_model_path: str | None = Field(None, description="base model: a Hugging Face id or a local directory "
                                        "(default: the recipe's base)", json_schema_extra={"flag": "--base-model"})
    eval_dataset: str | None = Field(None, description="held-out data for the eval loss (default: a split of --dataset)")
    data_format: str | None = Field(None, description="dataset schema, if auto-detection guesses wrong",
                                    validation_alias=AliasChoices("data_format", "format"),
                                    json_schema_extra={"flag": "--format"})
    lenient: bool = Field(False, description="skip bad records instead of stopping at the first")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    save_steps: int = Field(100, ge=1, description="checkpoint every N optimizer steps (and at each epoch end)")
    save_strategy: Literal["steps", "epoch"] = Field("steps", description="when to checkpoint: every --save-steps "
                                                     "steps and at each epoch end (steps), or at epoch ends only")
    warmup_steps: int | None = Field(None, ge=0, description="learning-rate warmup in optimizer steps "
                                     "(default: the recipe's warmup_ratio of all steps)")
    resume: bool = Field(False, description="continue from the last checkpoint of this --output")
    overwrite: bool = Field(False, description="replace files at the paths training writes even if training did "
                            "not write them (other files in --output are always kept)")
    include_dataset: bool = Field(False, description="copy the training data into training/dataset.jsonl "
                                  "(it is never part of a submission)")
    routing_profile: bool = Field(True, description="record in the manifest which common words the training "
                                  "questions hold (each in >= 5 of them), so `quantgrid serve` can route to the adapter")
    keep_checkpoints: bool = Field(False, description="keep <output>.checkpoints/ at the end")
    backend: Literal["auto", "hf", "unsloth"] = Field("auto", description="training backend (auto: Unsloth on "
                                                      "CUDA when installed)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="dtype of the base weights")
    bf16: bool = Field(False, description="TrainingArguments' switch: the same as --dtype bfloat16")
    fp16: bool = Field(False, description="TrainingArguments' switch: the same as --dtype float16")
    load_in_4bit: bool | None = Field(None, description="load the base in 4-bit NF4, i.e. QLoRA "
                                      "(default: on for CUDA; without 4-bit support there it stops with an error)",
                                      json_schema_extra={"flag": "--4bit/--no-4bit"})
    device: str | None = Field(None, description="cpu, cuda, cuda:1... (default: cuda when available)")
    author: str | None = Field(None, description="author name for the manifest")
    dataset_description: str | None = Field(None, description="dataset description for the manifest (no data)",
                                            validation_alias=AliasChoices("dataset_description", "description"),
                                            json_schema_extra={"flag": "--description"})
    log_every: int = Field(10, ge=1, description="report the training loss every N optimizer steps",
                           validation_alias=AliasChoices("log_every", "logging_steps"))
    progress: Literal["auto", "rich", "plain", "none"] = Field("auto", description="progress display "
                                                               "(auto: a bar on a terminal)")
    eval_steps: int | None = Field(None, ge=1, description="evaluate on the held-out split every N optimizer steps "
                                   "(default: at the end of each epoch)")
    load_best_model_at_end: bool = Field(False, description="write the weights of the evaluation with the lowest "
                                         "held-out loss instead of the last step's (the kept step is in the log)")
    report_to: str | None = Field(None, description="experiment trackers, comma-separated: tensorboard, wandb "
                                  "(offline unless WANDB_MODE=online), or none")
    logging_dir: str | None = Field(None, description="where tracker logs go (default: <output>/training/runs)")
    run_name: str | None = Field(None, description="the run's name in the trackers (default: output name + time)")
    license: str | None = Field(None, description="licence id for the adapter's model card, e.g. apache-2.0 "
                                "(default: other, i.e. not declared)")

    @model_validator(mode="after")
    def _half_precision(self) -> RunSettings:
        wanted = [d for d, on in (("bfloat16", self.bf16), ("float16", self.fp16)) if on]
        if len(wanted) > 1 or (wanted and self.dtype not in ("auto", wanted[0])):
            raise ConfigError(f"--bf16, --fp16 and --dtype {self.dtype} disagree",
                              hint="give one of them: --dtype float32|bfloat16|float16")
        if wanted and self.dtype == "auto":
            # validate_assignment would run this validator again: set the value directly
            object.__setattr__(self, "dtype", wanted[0])
        return self


class TrainConfig(BaseModel):
    """The exact resolved settings of a run; saved as ``training/train_config.yaml``."""

    model_config = ConfigDict(extra="forbid")

    recipe: Recipe
    run: RunSettings

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def train_settings() -> dict[str, Setting]:
    """Every training setting by flat name (recipe and run), as the CLI, YAML and Python name it."""
    return settings_of(TrainConfig)


_HINT = "fix the value named above (see `quantgrid train --help`)"


def resolve_config(recipe: Recipe, overrides: dict[str, Any], base_model: str | None = None) -> TrainConfig:
    """recipe + flat overrides -> a validated TrainConfig; errors name the user's flag."""
    table = train_settings()
    tree = nest(table, overrides, what="training setting",
                into={"recipe": recipe.model_dump(mode="json"), "run": {}})
    if base_model:
        tree["run"]["base_model_path"] = base_model
    for required in ("dataset", "output_dir"):
        if not tree["run"].get(required):
            s = table[required]
            raise ConfigError(f"no {required.replace('_', ' ')} given",
                              hint=f"pass {s.flag} (or set it in --config; {' or '.join(s.names)}= in Python)")
    return validate(TrainConfig, tree, table, what="training settings", hint=_HINT)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A train.yaml -> flat overrides. It may be a saved ``train_config.yaml`` ({recipe, run})
    or flat keys (``dataset: x.jsonl``, ``lora_rank: 8``, ``learning_rate: 1e-4``), or a mix."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError(f"--config: {p} not found", hint="pass a YAML file, e.g. a previous run's training/train_config.yaml")
    data = load_yaml_mapping(p, f"--config {p}")
    try:
        return flatten(train_settings(), data, what="training setting")
    except ConfigError as e:
        raise ConfigError(f"--config {p}: {e.message}", hint=e.hint) from None


# Kept for code that imports it: the settings table, generated from the models.
SETTINGS = train_settings()
