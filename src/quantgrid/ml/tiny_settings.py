"""The settings of ``quantgrid base tiny``: its flags are the fields (see
:mod:`quantgrid.settings`). The choices come from :mod:`quantgrid.ml.tiny`'s own tables, so
a size or family added there is a choice here. Imports pydantic and that module (no torch)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

from quantgrid.ml.tiny import TINY_FAMILIES, TINY_SIZES

TinySize = enum.Enum("TinySize", {name: name for name in TINY_SIZES}, type=str, module=__name__)
TinyFamilyName = enum.Enum("TinyFamilyName", {name: name for name in TINY_FAMILIES}, type=str, module=__name__)


def _sizes() -> str:
    return "; ".join(f"{name} ({d['num_hidden_layers']} layers, {d['hidden_size']} wide)"
                     for name, d in TINY_SIZES.items())


def _families() -> str:
    # The first clause of what each stands for: the help stays a list, not a paragraph.
    return "; ".join(f"{name} ({fam.stands_for.split(' (')[0]})" for name, fam in TINY_FAMILIES.items())


class TinyBaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: TinySize = Field(TinySize("test"), description=f"model size: {_sizes()}. test keeps unit tests fast; "
                           "demo is big enough to show adapters learning")
    family: TinyFamilyName = Field(TinyFamilyName("llama"), description="the real base family it stands in for "
                                   "(architecture, tokenizer kind, tied embeddings): " + _families())
    seed: int = Field(0, description="seed: the same size, family and seed give the same model")
