"""The one standardized recipe every contributor trains with.

The hub owns a recipe and publishes it (``GET /v1/recipe``); contributors train with
it; the hub checks every submission against it. Adapters trained with the same recipe
have the same shapes and scaling, which is what makes an exact merge possible.

This module imports without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from quantgrid.errors import ConfigError, ConfigFileError

DEFAULT_BASE_MODEL = "mistralai/Mistral-7B-v0.1"
PROMPT_TEMPLATES = ("qa", "context_qa", "alpaca", "mistral", "chat")


def _known_template(v: str) -> str:
    if v not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt_template {v!r}; choose one of {', '.join(PROMPT_TEMPLATES)}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank (non-standard if changed)",
                   json_schema_extra={"name": "lora_rank"})
    alpha: float = Field(32, gt=0, description="LoRA alpha; the update is scaled by alpha / r (non-standard if changed)",
                         json_schema_extra={"name": "lora_alpha"})
    # validate_default: the default goes through the sorting validator too, so Recipe() and
    # a recipe read back from YAML are equal and hash the same.
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      validate_default=True,
                                      description="modules LoRA adapts, comma-separated (non-standard if changed)")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout", json_schema_extra={"name": "lora_dropout"})
    bias: Literal["none"] = Field("none", description="LoRA bias", json_schema_extra={"name": "lora_bias"})

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v):
        # "q_proj,v_proj" (a flag or a YAML string) and ["q_proj", "v_proj"] mean the same.
        if isinstance(v, str):
            v = [v]
        if isinstance(v, (list, tuple)):
            return [m.strip() for item in v for m in (item.split(",") if isinstance(item, str) else [item])
                    if not isinstance(m, str) or m.strip()]
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("target_modules must name at least one module, e.g. q_proj")
        if len(set(v)) != len(v):
            raise ValueError(f"target_modules has duplicates: {v}")
        return sorted(v)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class TrainingSettings(_Strict):
    # The second names are Hugging Face TrainingArguments' (what most fine-tuning guides use).
    epochs: float = Field(3, gt=0, description="epochs",
                          validation_alias=AliasChoices("epochs", "num_epochs", "num_train_epochs"))
    batch_size: int = Field(4, ge=1, description="examples per micro-batch",
                            validation_alias=AliasChoices("batch_size", "per_device_train_batch_size"))
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step",
                            validation_alias=AliasChoices("grad_accum", "gradient_accumulation_steps"))
    lr: float = Field(2e-4, gt=0, lt=1, description="peak learning rate",
                      validation_alias=AliasChoices("lr", "learning_rate"))
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of the steps spent warming up the learning rate")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="learning-rate schedule after warmup",
        validation_alias=AliasChoices("schedule", "lr_scheduler_type"))
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradients are clipped to this norm")
    max_seq_length: int = Field(1024, ge=16, description="longest example, in tokens")
    seed: int = Field(42, description="random seed (LoRA initialisation, eval split, data order); quantgrid train "
                      "draws a fresh one per run unless you give it, and records the one used")
    eval_fraction: float = Field(0.05, ge=0, lt=0.5, description="share of the data held out for the eval loss "
                                 "when no eval dataset is given")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after N evaluations without "
                                                "improvement of the held-out loss",
                                                json_schema_extra={"flag": "--early-stopping"})


class Recipe(_Strict):
    """Base model + LoRA + training defaults + prompt template. Hash it with ``.hash()``."""

    base_model: str = Field(DEFAULT_BASE_MODEL, description="base model: a Hugging Face id or a local directory")
    base_revision: str = Field("main", description="revision of the base model on the Hugging Face Hub")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    prompt_template: Annotated[str, AfterValidator(_known_template)] = Field(
        "qa", description=f"prompt template: {', '.join(PROMPT_TEMPLATES)}")
    system_prompt: str = Field("You are a careful financial analyst. Answer precisely and show the numbers.",
                               description="system prompt of the chat and mistral templates")

    @model_validator(mode="after")
    def _base(self) -> Recipe:
        if not self.base_model.strip():
            raise ValueError("base_model is empty; give a Hugging Face id or a local path")
        return self

    # ---- identity ----
    def canonical_json(self) -> str:
        """Key-order independent JSON: the same settings always give the same text.

        The seed is left out: each training run draws its own (so contributors' LoRA
        initialisations differ), and the hash names the recipe everyone shares, not the run.
        """
        data = self.model_dump(mode="json")
        data["training"].pop("seed", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def standard_fields_differ(self, standard: Recipe) -> list[str]:
        """Names of the LoRA settings that differ from ``standard`` (non-standard adapter)."""
        mine, theirs = self.lora.model_dump(), standard.lora.model_dump()
        return [f"lora.{k}" for k in mine if k != "dropout" and mine[k] != theirs[k]]

    # ---- YAML ----
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        from quantgrid.utils import atomic_write_text

        return atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "recipe") -> Recipe:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"invalid {source}: {format_validation_error(e)}",
                              hint="fix the value named above; `quantgrid recipe show` prints a valid recipe") from None

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        p = Path(path)
        if not p.is_file():
            raise ConfigFileError(f"recipe file not found: {p}", hint="pass a YAML file written by `quantgrid recipe show`")
        from quantgrid.utils import load_yaml_mapping

        return cls.from_dict(load_yaml_mapping(p, str(p)), source=str(p))


def format_validation_error(e: ValidationError, flag_names: dict[str, str] | None = None) -> str:
    """One line per problem, naming the field (or the user's CLI flag for it)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        name = (flag_names or {}).get(loc, loc)
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts)
