"""Datasets: every schema users bring -> ``Example``; built-in finance sets; fingerprints.

``load_examples("train.jsonl")`` or ``load_examples("builtin:finance-dev")`` is the one
entry point the trainer, the evaluator and the hub use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from quantgrid.data.formats import FORMATS, LoadReport, Skipped, read_file, write_records
from quantgrid.data.sets import BUILTIN_PREFIX, builtin_sets, load_builtin, register_builtin
from quantgrid.data.types import Example

__all__ = [
    "BUILTIN_PREFIX", "FORMATS", "Example", "LoadReport", "Skipped", "builtin_sets", "example_hash",
    "fingerprint", "load_examples", "load_examples_report", "register_builtin", "write_records",
]

FINGERPRINT_SCHEMA = "quantgrid-dataset-v1"


def load_examples_report(source: str | Path, *, format: str | None = None, lenient: bool = False,
                         max_bytes: int | None = None) -> LoadReport:
    """Examples plus what was detected and (``lenient``) which records were skipped."""
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        examples = load_builtin(source[len(BUILTIN_PREFIX):])
        return LoadReport(source=source, format="qa", examples=examples)
    return read_file(source, format=format, lenient=lenient, max_bytes=max_bytes)


def load_examples(source: str | Path, *, format: str | None = None, lenient: bool = False) -> list[Example]:
    """Read a JSON-array / JSONL file or ``builtin:NAME`` into Examples.

    Raises ``DataError`` naming the file, the line (JSONL) or index (JSON array) and
    the problem. ``lenient=True`` skips bad records (logged; see ``load_examples_report``).
    """
    return load_examples_report(source, format=format, lenient=lenient).examples


def example_hash(example: Example) -> str:
    """sha256 of an example's text (prompt, context, completion), whitespace-normalized.

    Lets a contributor check locally whether a benchmark overlaps their data without
    the data (or per-example hashes) ever leaving their machine.
    """
    def norm(s: str | None) -> str:
        return " ".join((s or "").split())

    payload = json.dumps([norm(example.prompt), norm(example.context), norm(example.completion)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def fingerprint(examples: Iterable[Example]) -> dict:
    """Counts and one order-independent sha256 of a dataset; never any text or per-example hash."""
    hashes = []
    n_context = prompt_chars = completion_chars = 0
    for ex in examples:
        hashes.append(example_hash(ex))
        n_context += bool(ex.context)
        prompt_chars += len(ex.prompt)
        completion_chars += len(ex.completion)
    digest = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
    return {"schema": FINGERPRINT_SCHEMA, "n_examples": len(hashes), "n_unique": len(set(hashes)),
            "n_with_context": n_context, "prompt_chars": prompt_chars, "completion_chars": completion_chars,
            "sha256": digest}
