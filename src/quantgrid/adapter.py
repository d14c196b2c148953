"""The adapter directory and its manifest (``quantgrid.json``).

An adapter directory is a plain PEFT adapter (``adapter_config.json`` +
``adapter_model.safetensors``) plus quantgrid's manifest and the training/eval records
(DESIGN §3). This module imports without torch: the hub and thin clients use it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from quantgrid import __version__
from quantgrid.recipe import Recipe
from quantgrid.utils import atomic_write_text, sha256_file

MANIFEST = "quantgrid.json"
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
REQUIRED_FILES = (CONFIG, WEIGHTS, MANIFEST)
# Files that hold raw training data: never packaged, never hashed into the manifest.
RAW_DATA_FILES = ("training/dataset.jsonl",)


class BaseRef(BaseModel):
    name: str
    revision: str = "main"
    fingerprint: str


class DatasetInfo(BaseModel):
    """What the manifest says about the training data: counts and a hash, never text."""

    description: str | None = None
    fingerprint: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    format_version: int = 1
    quantgrid_version: str = __version__
    created_at: float = Field(default_factory=time.time)
    recipe_hash: str
    recipe: dict[str, Any]
    base_model: BaseRef
    non_standard: list[str] = Field(default_factory=list)
    author: str | None = None
    dataset: DatasetInfo = Field(default_factory=DatasetInfo)
    eval: dict[str, Any] | None = None
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")

    @property
    def standard(self) -> bool:
        return not self.non_standard


def hashed_files(adapter_dir: Path) -> dict[str, str]:
    """sha256 of every file in the directory except the manifest itself and raw data."""
    out = {}
    for p in sorted(adapter_dir.rglob("*")):
        rel = p.relative_to(adapter_dir).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in RAW_DATA_FILES and not p.name.startswith("."):
            out[rel] = sha256_file(p)
    return out


def write_manifest(adapter_dir: str | Path, *, recipe: Recipe, base_name: str, base_fingerprint: str,
                   standard: Recipe | None = None, author: str | None = None,
                   dataset_description: str | None = None, dataset_fingerprint: dict | None = None,
                   eval_summary: dict | None = None, previous: Manifest | None = None) -> Manifest:
    """Write ``quantgrid.json`` with fresh file hashes. Call it last, after every other file."""
    adapter_dir = Path(adapter_dir)
    m = Manifest(
        recipe_hash=recipe.hash(),
        recipe=recipe.model_dump(mode="json"),
        base_model=BaseRef(name=base_name, revision=recipe.base_revision, fingerprint=base_fingerprint),
        non_standard=recipe.standard_fields_differ(standard) if standard else [],
        author=author if author is not None else (previous.author if previous else None),
        dataset=DatasetInfo(
            description=dataset_description or (previous.dataset.description if previous else None),
            fingerprint=dataset_fingerprint or (previous.dataset.fingerprint if previous else {}),
        ),
        eval=eval_summary if eval_summary is not None else (previous.eval if previous else None),
        files=hashed_files(adapter_dir),
    )
    atomic_write_text(adapter_dir / MANIFEST, m.model_dump_json(indent=2))
    return m


def read_manifest(adapter_dir: str | Path) -> Manifest:
    from quantgrid.errors import ModelError

    p = Path(adapter_dir) / MANIFEST
    if not p.is_file():
        raise ModelError(f"{adapter_dir} has no {MANIFEST}", hint="was it written by `quantgrid train`?")
    return Manifest.model_validate(json.loads(p.read_text(encoding="utf-8")))


def is_adapter_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / CONFIG).is_file() and (p / MANIFEST).is_file()
