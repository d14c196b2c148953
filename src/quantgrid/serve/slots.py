"""Adapters the server knows about, and the LRU slots that hold the loaded ones.

An adapter is a plain PEFT directory (``adapter_config.json`` + ``adapter_model.safetensors``,
optionally ``quantgrid.json``). Registering one only records its path and manifest; its
weights are read into a slot when a request first needs it, and the least recently used
idle slot is evicted when all are taken. A slot in use by a running request is never
evicted: the request waits instead.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from quantgrid.data.chat_template import CHAT_TEMPLATE_FILE
from quantgrid.data.profile import profile_terms
from quantgrid.errors import ModelError
from quantgrid.lora_files import CONFIG, WEIGHTS, is_lora_dir

_WORD = re.compile(r"[a-z][a-z0-9_-]{2,}")
_STOPWORDS = frozenset(
    "the and for with from that this into over under about your their our are was were has have had "
    "not but can will using used use data dataset adapter model questions question answers answer".split())


@dataclass
class AdapterInfo:
    """A registered adapter: where it lives and what its manifest says it is for."""

    name: str
    path: Path
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    version: str | None = None
    # How its prompts were rendered in training: the recipe's template and system prompt
    # (from the manifest), else a chat_template.jinja shipped in the directory, else nothing
    # known (the base tokenizer's chat template is used).
    prompt_template: str | None = None
    system_prompt: str | None = None
    chat_template: str | None = None
    profile: dict[str, float] | None = None  # routing: word -> share of training questions


@dataclass
class AdapterWeights:
    """LoRA factors per module name (as in ``model.named_modules()``): a (r, d_in), b (d_out, r)."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scaling: float
    rank: int


def _manifest_text(manifest: dict) -> tuple[str, list[str]]:
    ds = manifest.get("dataset") or {}
    desc = (manifest.get("dataset_description") or (ds.get("description") if isinstance(ds, dict) else None)
            or manifest.get("description") or "")
    keywords = manifest.get("keywords") or (ds.get("keywords") if isinstance(ds, dict) else None) or []
    return str(desc), [str(k).lower() for k in keywords]


def describe_adapter(name: str, path: str | Path) -> AdapterInfo:
    """Check ``path`` is an adapter directory and read its manifest (no weights)."""
    p = Path(path).expanduser()
    if not is_lora_dir(p):
        raise ModelError(f"adapter {name!r}: {p} is not an adapter directory (needs {CONFIG} and {WEIGHTS})",
                         hint="pass the directory that `quantgrid train` or `quantgrid package` wrote")
    desc, keywords, version, manifest = "", [], None, {}
    if (p / "quantgrid.json").is_file():
        try:
            manifest = json.loads((p / "quantgrid.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelError(f"adapter {name!r}: {p / 'quantgrid.json'} is not valid JSON ({e})",
                             hint="re-create the manifest with `quantgrid train` or `quantgrid package`") from None
        if not isinstance(manifest, dict):
            manifest = {}
        desc, keywords = _manifest_text(manifest)
        version = manifest.get("version") or manifest.get("release")
    if not keywords:
        keywords = keywords_from(desc)
    recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    template = recipe.get("prompt_template") if isinstance(recipe.get("prompt_template"), str) else None
    system = recipe.get("system_prompt") if isinstance(recipe.get("system_prompt"), str) else None
    jinja = p / CHAT_TEMPLATE_FILE
    return AdapterInfo(name=name, path=p, description=desc, keywords=keywords,
                       version=str(version) if version is not None else None,
                       prompt_template=template, system_prompt=system,
                       chat_template=jinja.read_text(encoding="utf-8") if template is None and jinja.is_file() else None,
                       profile=profile_terms(manifest.get("routing")))


def keywords_from(text: str) -> list[str]:
    """Distinct content words of a description, in order."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text.lower()):
        if w not in _STOPWORDS:
            seen.setdefault(w, None)
    return list(seen)


def read_adapter(path: Path) -> AdapterWeights:
    """LoRA factors and scaling from a PEFT adapter directory (safetensors only, never pickle).

    Read by :mod:`quantgrid.lora_files`; the batched engine also needs one rank and alpha
    for every module (one scaling per slot).
    """
    from quantgrid.lora_files import read_config, read_weights, uniform_scaling

    path = Path(path)
    cfg = read_config(path)
    if cfg.get("use_dora"):
        raise ModelError(f"{path}: DoRA adapters are not supported by the batched engine",
                         hint="train with the standard quantgrid recipe (plain LoRA)")
    r, scaling = uniform_scaling(cfg, where=str(path))
    factors = {module: (f.A, f.B) for module, f in read_weights(path, cfg).items()}
    return AdapterWeights(factors=factors, scaling=scaling, rank=r)


class SlotTable:
    """Which adapter sits in which slot, reference counts, and LRU order. Pure bookkeeping."""

    def __init__(self, n_slots: int):
        if n_slots < 1:
            raise ValueError("need at least one adapter slot")
        self.n_slots = n_slots
        self.slot_of: dict[str, int] = {}
        self.refs = [0] * n_slots
        self._lru: OrderedDict[int, str] = OrderedDict()  # idle loaded slots, oldest first
        self._free = list(range(n_slots))

    def acquire(self, name: str) -> tuple[int, bool, str | None] | None:
        """(slot, needs_load, evicted name) for ``name``, or None when every slot is busy."""
        if name in self.slot_of:
            slot = self.slot_of[name]
            self._lru.pop(slot, None)
            self.refs[slot] += 1
            return slot, False, None
        evicted = None
        if self._free:
            slot = self._free.pop(0)
        elif self._lru:
            slot, evicted = self._lru.popitem(last=False)
            del self.slot_of[evicted]
        else:
            return None
        self.slot_of[name] = slot
        self.refs[slot] = 1
        return slot, True, evicted

    def release(self, slot: int) -> None:
        self.refs[slot] -= 1
        if self.refs[slot] == 0:
            name = next(n for n, s in self.slot_of.items() if s == slot)
            self._lru[slot] = name

    def forget(self, name: str) -> None:
        """Drop a failed load so the slot is free again."""
        slot = self.slot_of.pop(name)
        self.refs[slot] = 0
        self._lru.pop(slot, None)
        self._free.append(slot)

    def loaded(self) -> list[str]:
        return sorted(self.slot_of, key=self.slot_of.get)
