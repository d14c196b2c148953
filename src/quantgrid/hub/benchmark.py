"""The hub's hidden benchmark: finance items drawn from a server-side secret.

Proof of loss can only be gamed by training on the test set, so the test set is secret
and replaceable :

* the items are the finance templates drawn with a seed derived from the hub's secret
  (``HubSettings.benchmark_seed()``), ``benchmark_size`` of them (500 by default), none of
  which overlaps a built-in (public) data set, exactly or as an n-gram near-duplicate, plus
  every item of the operator's own files (``benchmark_files``), which never leave the hub;
* the out-of-domain set (general questions, for the forgetting check) is a sample drawn
  from the same secret;
* ``rotate_secret`` replaces the secret, and with it every templated item: anyone who
  collected items by probing the hub now holds a stale set.

Only ``benchmark_id`` (a hash of the secret, safe to show) appears in reports.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quantgrid.data.types import Example
from quantgrid.errors import ConfigError

if TYPE_CHECKING:
    from quantgrid.hub.settings import HubSettings

DEFAULT_SIZE = 500
OOD_SIZE = 200
SECRET_FILE = "benchmark_secret"


@dataclass(frozen=True)
class HiddenSets:
    benchmark: list[Example]
    ood: list[Example]
    benchmark_id: str
    n_operator: int = 0


def seed_from_secret(secret: str, purpose: str = "benchmark") -> int:
    """A 60-bit integer seed; different purposes give unrelated seeds from one secret."""
    return int(hashlib.sha256(f"quantgrid:{purpose}:{secret}".encode()).hexdigest()[:15], 16)


def benchmark_id(secret: str) -> str:
    """A public name for the benchmark a secret makes; reveals nothing about the items."""
    return hashlib.sha256(f"quantgrid:benchmark-id:{secret}".encode()).hexdigest()[:12]


def build_hidden_sets(secret: str, size: int = DEFAULT_SIZE, operator_files: list[str | Path] | tuple = (),
                      ood_size: int = OOD_SIZE) -> HiddenSets:
    """``size`` templated items from ``secret`` plus every operator item, and the OOD sample."""
    from quantgrid.data import load_examples
    from quantgrid.data.finance import general_ood, generate

    if not secret:
        raise ConfigError("the benchmark secret is empty", hint="run `quantgrid hub rotate-benchmark`")
    items = _public_free(size, secret, generate)
    operator: list[Example] = []
    for f in operator_files:
        operator += load_examples(f)
    ood_all = general_ood()
    ood = general_ood(min(ood_size, len(ood_all)), seed=seed_from_secret(secret, "ood"))
    return HiddenSets(items + operator, ood, benchmark_id(secret), len(operator))


def public_examples() -> list[Example]:
    """Every item of every built-in (public) data set: what the hidden benchmark must never contain."""
    from quantgrid.data.sets import builtin_sets, load_builtin

    out: list[Example] = []
    for name in builtin_sets():
        out += load_builtin(name)
    return out


def _public_free(size: int, secret: str, generate) -> list[Example]:
    """``size`` templated items drawn from ``secret`` that overlap no public set.

    Each draw is checked with the leakage check the data tools use (``data.split.find_leakage``:
    exact after normalisation, and word 8-gram near-duplicates); leaked items are dropped and
    replaced from further draws of the same secret, so the result stays reproducible.
    """
    from quantgrid.data.split import find_leakage

    public = public_examples()
    kept: list[Example] = []
    seen: set[tuple[str, str | None]] = set()
    for round_ in range(50):
        purpose = "benchmark" if round_ == 0 else f"benchmark:{round_}"
        need = size - len(kept)
        batch = [ex for ex in generate(need + need // 5 + 5, seed_from_secret(secret, purpose))
                 if (ex.prompt, ex.context) not in seen]
        leaked = find_leakage(public, batch).leaked_bench
        for i, ex in enumerate(batch):
            if i not in leaked and len(kept) < size:
                kept.append(ex)
                seen.add((ex.prompt, ex.context))
        if len(kept) >= size:
            return kept
    raise ConfigError(f"could not draw {size} hidden benchmark items that overlap no public data set",
                      hint="lower benchmark_size, or add the operator's own items with benchmark_files")


def hidden_sets(settings: HubSettings) -> HiddenSets:
    """The hidden sets of a hub, from its settings."""
    files = list(settings.benchmark_files)
    return build_hidden_sets(settings.benchmark_seed(), settings.benchmark_size, files)


def rotate_secret(settings: HubSettings) -> tuple[str, str]:
    """Replace the hub's benchmark secret. Returns (old benchmark id, new benchmark id)."""
    from quantgrid.utils import atomic_write_text

    if settings.benchmark_secret is not None:
        raise ConfigError("the benchmark secret is set in the hub's settings (QUANTGRID_HUB_BENCHMARK_SECRET "
                          "or benchmark_secret in --config), so it cannot be rotated here",
                          hint="change that setting to a new random value, or remove it to let the hub "
                               "keep its own secret file")
    old = benchmark_id(settings.benchmark_seed())
    path = settings.storage_dir / SECRET_FILE
    atomic_write_text(path, secrets.token_hex(32), mode=0o600)
    return old, benchmark_id(settings.benchmark_seed())
