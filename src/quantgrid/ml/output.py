"""Writing a trained adapter into its output directory, in place, touching only what training owns.

The output directory is often the contributor's project folder (the LocoLLM layout:
``adapters/my-domain/training/dataset.jsonl``, ``adapters/my-domain/eval/benchmark.jsonl``),
so a run never replaces the directory whole. It writes a fixed set of files
(``TRAINING_FILES``), and replaces an existing file at one of those paths only if an
earlier run wrote it (listed in the hidden record ``.quantgrid-train.json``, or for
adapters from before that record, in the manifest) or ``--overwrite`` says so. Every
other file in the directory is left exactly as it was.

Crash safety: every file is first written complete into a hidden temp sibling. A new
directory is then renamed into place in one step. An existing one gets the files moved
in one by one (each ``os.replace`` is atomic) with the old manifest removed first and
the new manifest moved last, so the directory is a complete adapter (``is_adapter_dir``)
only once every file of this run is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from quantgrid.adapter import CONFIG, MANIFEST, WEIGHTS
from quantgrid.errors import ConfigError
from quantgrid.utils import atomic_write_text, fsync_dir

RECORD = ".quantgrid-train.json"  # hidden: never hashed into the manifest, never packaged
CARD = "README.md"
TRAINING_LOG = "training/TRAINING_LOG.md"
DATASET_COPY = "training/dataset.jsonl"
# What every run writes (the manifest last). TRAINING_LOG.md is shared with the user:
# training rewrites only its own marked section of it (training_log.merge_log).
TRAINING_FILES = (CONFIG, WEIGHTS, CARD, "training/train_config.yaml", TRAINING_LOG, "training/loss.png", MANIFEST)
# The base tokenizer with the recipe's chat template: which of these files a tokenizer
# writes depends on its kind, so the check covers them all.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
# What the trainer wrote before it kept a record (it never wrote a README then).
_LEGACY_OWNED = frozenset({CONFIG, WEIGHTS, "training/train_config.yaml", TRAINING_LOG, "training/loss.png"})


@dataclass
class OutputPlan:
    """What a run will do to ``out``: decided before any heavy work, so a refusal costs nothing."""

    out: Path
    exists: bool
    overwrite: bool = False
    replaces: list[str] = field(default_factory=list)  # files of an earlier run (or --overwrite) to replace
    keeps: list[str] = field(default_factory=list)  # files training does not own: left untouched

    @property
    def in_place(self) -> bool:
        return self.exists


def _files_under(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() or p.is_symlink())


def owned_by_training(out: Path) -> set[str]:
    """Paths in ``out`` that an earlier training run wrote."""
    record = out / RECORD
    if record.is_file():
        try:
            return set(json.loads(record.read_text(encoding="utf-8"))["files"])
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable record vouches for nothing: the manifest fallback below
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            listed = set(json.loads(manifest.read_text(encoding="utf-8")).get("files", {}))
        except ValueError:
            listed = set()
        return (listed & _LEGACY_OWNED) | {MANIFEST}
    return set()


def plan_output(out: str | Path, writes: Iterable[str], *, overwrite: bool) -> OutputPlan:
    """Check ``out`` for a run that writes ``writes``; raise ConfigError naming any file it would clobber."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file, not a directory", hint="choose a directory name")
    if not out.is_dir():
        return OutputPlan(out, exists=False)
    present = set(_files_under(out))
    owned = owned_by_training(out)
    writes = set(writes) | set(TOKENIZER_FILES)
    at_our_paths = sorted((present & writes) - {TRAINING_LOG})  # the log is merged, never clobbered
    foreign = [p for p in at_our_paths if p not in owned]
    if foreign and not overwrite:
        raise ConfigError(
            f"--output {out} already holds {', '.join(foreign)}, which training did not write and would replace",
            hint="move those files away, choose another --output, or pass --overwrite to replace exactly "
                 "those files (nothing else in the directory is touched)")
    for p in at_our_paths:
        if (out / p).is_dir() or (out / p).is_symlink():
            raise ConfigError(f"--output {out}: {p} is a directory or a link, where training writes a file",
                              hint="move it away or choose another --output")
    return OutputPlan(out, exists=True, overwrite=overwrite, replaces=at_our_paths,
                      keeps=sorted(present - set(at_our_paths) - {TRAINING_LOG, RECORD}))


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden temp directory beside ``out`` (same filesystem, so moves are renames); removed after."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp gives 0700; the adapter should get what a plain mkdir gives
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install(tmp: Path, plan: OutputPlan) -> list[str]:
    """Move every file built in ``tmp`` into ``plan.out`` (see the module docstring). Returns them."""
    out = plan.out
    names = [n for n in _files_under(tmp) if n != MANIFEST and n != RECORD]
    if not (tmp / MANIFEST).is_file():
        raise RuntimeError("install() needs the manifest built last in the staging directory")
    if not out.exists():  # (trackers may have created it during training: then in place)
        atomic_write_text(tmp / RECORD, json.dumps({"files": sorted([*names, MANIFEST])}, indent=1))
        os.replace(tmp, out)
        fsync_dir(out.parent)
        return [*names, MANIFEST]
    previous = owned_by_training(out)
    clobbers = [n for n in names if (out / n).exists() and n not in previous and n != TRAINING_LOG]
    if clobbers and not plan.overwrite:  # a file the plan did not foresee: refuse rather than replace it
        raise ConfigError(f"--output {out} already holds {', '.join(clobbers)}, which training did not write "
                          "and would replace", hint="move those files away, or pass --overwrite to replace them")
    owned = sorted(previous | set(names) | {MANIFEST})
    # The record first: a crash below leaves files that the next run knows to be its own.
    atomic_write_text(out / RECORD, json.dumps({"files": owned}, indent=1))
    (out / MANIFEST).unlink(missing_ok=True)
    dirs = {out}
    for rel in names:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dest)
        dirs.add(dest.parent)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)
    os.replace(tmp / MANIFEST, out / MANIFEST)
    fsync_dir(out)
    return [*names, MANIFEST]
