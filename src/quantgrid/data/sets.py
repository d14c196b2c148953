"""Built-in datasets, named ``builtin:NAME`` wherever a file is expected.

A registry, so other parts of quantgrid add sets with ``register_builtin`` (the
formulaic-alpha benchmark does). The finance sets ship as JSONL files under
``data/builtin/`` so a benchmark never changes silently with the code: they are made
by ``generate_shipped()`` from fixed seeds, and a test checks that regenerating them
gives the shipped bytes. After changing a template on purpose, rewrite them with
``python -c "from quantgrid.data.sets import write_shipped; write_shipped()"``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantgrid.data.types import Example
from quantgrid.errors import DataError

BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).parent / "builtin"

TRAIN_SEED, DEV_SEED = 20240601, 20240602
TRAIN_COMPUTED, DEV_SIZE = 2000, 500


@dataclass(frozen=True)
class BuiltinSet:
    name: str
    description: str
    load: Callable[[], list[Example]]


_REGISTRY: dict[str, BuiltinSet] = {}


def register_builtin(name: str, description: str, load: Callable[[], list[Example]]) -> None:
    """Make ``builtin:NAME`` resolve to ``load()`` (called once, then cached)."""
    _REGISTRY[name] = BuiltinSet(name, description, functools.cache(load))


def builtin_sets() -> dict[str, str]:
    return {name: s.description for name, s in _REGISTRY.items()}


def load_builtin(name: str) -> list[Example]:
    if name not in _REGISTRY:
        raise DataError(f"unknown built-in dataset {BUILTIN_PREFIX}{name}",
                        hint=f"choose one of: {', '.join(BUILTIN_PREFIX + n for n in _REGISTRY)} "
                             "(`quantgrid data list` describes them)")
    return list(_REGISTRY[name].load())


def _shipped(filename: str) -> Callable[[], list[Example]]:
    def load() -> list[Example]:
        path = BUILTIN_DIR / filename
        out = []
        with path.open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                q, a, c = rec.pop("question"), rec.pop("answer"), rec.pop("context", None)
                out.append(Example(q, a, c, rec))
        return out
    return load


def generate_shipped() -> dict[str, list[Example]]:
    """The built-in sets, made from fixed seeds: what the files under builtin/ hold."""
    from quantgrid.data import finance
    from quantgrid.data.split import split_examples

    # Train and dev come from one pool split with the leakage check, so no dev item
    # is in train, exactly or as a near-duplicate.
    pool = finance.generate(TRAIN_COMPUTED + DEV_SIZE + 200, seed=TRAIN_SEED)
    train, dev = split_examples(pool, DEV_SIZE, seed=DEV_SEED)
    return {
        "finance-train.jsonl": train + finance.concepts(),
        "finance-dev.jsonl": dev,
        "general-ood.jsonl": finance.general_ood(),
    }


def render_jsonl(examples: list[Example]) -> str:
    return "".join(json.dumps(ex.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for ex in examples)


def write_shipped(directory: Path = BUILTIN_DIR) -> None:
    from quantgrid.utils import atomic_write_text

    for filename, examples in generate_shipped().items():
        path = atomic_write_text(directory / filename, render_jsonl(examples))
        path.chmod(0o644)  # package data must be world-readable once installed


register_builtin("finance-train", "finance Q&A for training: computed-answer templates (P/E, NPV, bonds, "
                 "options, risk, ...) plus hand-written concepts and formulaic alphas",
                 _shipped("finance-train.jsonl"))
register_builtin("finance-dev", "public dev benchmark: 500 computed-answer finance pairs, no overlap with "
                 "finance-train", _shipped("finance-dev.jsonl"))
register_builtin("general-ood", "general-domain questions (cooking, geography, science, arithmetic) to "
                 "check an adapter does not forget everything else", _shipped("general-ood.jsonl"))
register_builtin("alpha-bench", "60 hand-written formulaic-alpha tasks with reference expressions "
                 "(WorldQuant 101-alpha language), scored by the alpha_backtest metric", _shipped("alpha-bench.jsonl"))

