"""``registry.yaml``: every accepted adapter, by name and version, with its scores and release.

LocoLLM keeps a registry of adapters: a name, a version, the author, the base and the
scores, and the release each version ships in. The hub serves it (``GET
/v1/registry.yaml``); ``quantgrid registry`` writes it to a file, from a hub or from local
adapter directories.

Versions: a submission whose manifest names the adapter it ``improves`` becomes that
adapter's next version only if it beats the current version on the same hidden benchmark
(a lower hidden-benchmark loss, measured by the hub on the same ``benchmark_id``).
Otherwise it is listed under its own name with a note saying why it is not a new version.

Torch-free: pydantic and PyYAML only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

REGISTRY_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def valid_name(name: str | None) -> bool:
    return bool(name) and bool(NAME_RE.match(name or ""))


def slug(text: str) -> str:
    """A valid registry name made from any text (a directory name): 'My Adapter (1)' -> 'my-adapter-1'."""
    out = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63]
    return out or "adapter"


def name_problem(name: str | None, what: str = "name") -> str | None:
    if not name:
        return f"no adapter {what}"
    if not NAME_RE.match(name):
        return (f"adapter {what} {name!r} must be lowercase letters, digits, '-' and '_' (at most 63), "
                "e.g. 'sec-filings'")
    return None


class Scores(BaseModel):
    metric: str = "loss"
    higher_is_better: bool = False
    adapter_score: float | None = None
    base_model_score: float | None = None
    improvement: float | None = Field(None, description="positive when the adapter is better")
    hidden_loss: float | None = Field(None, description="the hub's hidden-benchmark loss of this adapter")
    hidden_benchmark: str | None = None


class RegistryEntry(BaseModel):
    name: str
    version: int = 1
    author: str | None = None
    base_model: str
    scores: Scores = Field(default_factory=Scores)
    release: str | None = Field(None, description="the newest published release that holds this version")
    improves: str | None = None
    id: int | None = Field(None, description="the hub's adapter (submission) id")
    accepted_at: str | None = None
    current: bool = True
    note: str | None = None


class Registry(BaseModel):
    registry_version: int = REGISTRY_VERSION
    generated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    source: str | None = None
    adapters: list[RegistryEntry] = Field(default_factory=list)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str) -> Registry:
        import yaml

        return cls.model_validate(yaml.safe_load(text) or {})


@dataclass
class Accepted:
    """One accepted adapter as the hub knows it (in acceptance order)."""

    id: int
    author: str
    base_model: str
    name: str | None = None
    improves: str | None = None
    scores: Scores | None = None
    release: str | None = None
    accepted_at: str | None = None


def assign_versions(accepted: list[Accepted]) -> list[RegistryEntry]:
    """Registry entries with names and versions (see the module docstring), oldest first."""
    entries: list[RegistryEntry] = []
    current: dict[str, RegistryEntry] = {}
    for a in sorted(accepted, key=lambda x: x.id):
        scores = a.scores or Scores()
        base = dict(author=a.author, base_model=a.base_model, scores=scores, release=a.release, id=a.id,
                    accepted_at=a.accepted_at, improves=a.improves)
        own = a.name if valid_name(a.name) else f"adapter-{a.id}"
        target = current.get(a.improves) if a.improves else None
        if target is not None:
            beats = (scores.hidden_loss is not None and target.scores.hidden_loss is not None
                     and scores.hidden_benchmark == target.scores.hidden_benchmark
                     and scores.hidden_loss < target.scores.hidden_loss)
            if beats:
                target.current = False
                entry = RegistryEntry(name=target.name, version=target.version + 1, **base)
                current[target.name] = entry
                entries.append(entry)
                continue
            why = ("was measured on a different hidden benchmark" if scores.hidden_benchmark !=
                   target.scores.hidden_benchmark else "does not beat it on the hidden benchmark")
            note = f"submitted as a new version of {target.name} v{target.version}, but {why}"
            if own == target.name:
                own = f"{target.name}-{a.id}"
        elif a.improves:
            note = f"names {a.improves!r} as the adapter it improves, which is not in the registry"
        else:
            note = None
        if own in current:
            own = f"{own}-{a.id}"
        entry = RegistryEntry(name=own, version=1, note=note, **base)
        current[own] = entry
        entries.append(entry)
    return entries


# ---------------------------------------------------------------- local adapters


def entry_problems(adapter_dir: Path, manifest: Any, results: Any) -> list[str]:
    """What keeps an adapter directory from a complete registry entry (empty: nothing)."""
    out = []
    name = manifest.name if manifest is not None and manifest.name else adapter_dir.resolve().name
    problem = name_problem(name)
    if problem:
        out.append(problem + " (rename the directory or set the manifest's name)")
    if manifest is None:
        return out + ["no readable quantgrid.json"]
    if not manifest.author:
        out.append("no author in quantgrid.json (train with --author, or package with --author)")
    if manifest.improves and name_problem(manifest.improves, "it improves"):
        out.append(name_problem(manifest.improves, "it improves"))
    if results is None or results.adapter_score is None:
        out.append("no adapter score (run `quantgrid eval --adapter DIR --write-into-adapter`)")
    return out


def local_entry(adapter_dir: Path) -> RegistryEntry:
    """The registry entry of a local adapter directory (version 1, in no release)."""
    from quantgrid.adapter import read_manifest
    from quantgrid.eval.results import EvalResults

    m = read_manifest(adapter_dir)
    res_path = adapter_dir / "eval" / "results.json"
    r = EvalResults.read(res_path) if res_path.is_file() else None
    scores = Scores() if r is None else Scores(
        metric=r.metric, higher_is_better=r.higher_is_better, adapter_score=r.adapter_score,
        base_model_score=r.base_model_score, improvement=r.improvement)
    return RegistryEntry(name=m.name or adapter_dir.resolve().name, author=m.author, base_model=m.base_model.name,
                         scores=scores, improves=m.improves)


def local_registry(adapter_dirs: list[Path]) -> Registry:
    from quantgrid.adapter import is_adapter_dir
    from quantgrid.errors import ConfigError

    dirs: list[Path] = []
    for d in adapter_dirs:
        if is_adapter_dir(d):
            dirs.append(d)
        elif d.is_dir():
            dirs += sorted(p for p in d.iterdir() if is_adapter_dir(p))
        else:
            raise ConfigError(f"{d} is not a directory", hint="pass adapter directories, or a folder of them")
    if not dirs:
        raise ConfigError("no adapter directories found", hint="pass the directories `quantgrid train` wrote")
    return Registry(source="local", adapters=[local_entry(d) for d in dirs])


__all__ = ["Accepted", "Registry", "RegistryEntry", "Scores", "assign_versions", "entry_problems",
           "local_registry", "name_problem", "slug", "valid_name"]
