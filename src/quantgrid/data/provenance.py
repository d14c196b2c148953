"""How synthetic training data was made and reviewed, recorded in the adapter's TRAINING_LOG.md.

LocoLLM asks contributors to document synthetic data: for generated data the generator,
its seed and templates; for a set the contributor made with a model, the model, the
prompt file and a human review of at least 10% of it, with the rejection rate. The data
commands write that record themselves when their output lands in an adapter's
``training/`` folder, into ``training/TRAINING_LOG.md`` under a "Synthetic-data
provenance" heading. Training rewrites only its own marked section of that file, so the
record survives retraining; each data file's entry is replaced, never duplicated, when a
command runs again.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from quantgrid.errors import DataError
from quantgrid.utils import atomic_write_text, sha256_file

HEADING = "## Synthetic-data provenance"
LOG_NAME = "TRAINING_LOG.md"
MIN_REVIEW_FRACTION = 0.10
REVIEW_FIELD = "review"  # "accept" or "reject", filled in by the reviewer
ACCEPT, REJECT = "accept", "reject"


def log_for(data_file: Path) -> Path | None:
    """The TRAINING_LOG.md a data file's provenance goes into: beside it, in an adapter's training/."""
    parent = Path(data_file).resolve().parent
    return parent / LOG_NAME if parent.name == "training" else None


def entry_key(kind: str, data_file: Path) -> str:
    """A stable key for one file's entry that does not spell out the user's file name."""
    import hashlib

    return f"{kind} {hashlib.sha256(Path(data_file).name.encode()).hexdigest()[:8]}"


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- quantgrid data: {key} -->", f"<!-- end of quantgrid data: {key} -->"


def record(log: Path, key: str, lines: list[str]) -> Path:
    """Write (or replace) the provenance entry ``key`` in ``log``, keeping everything else in it."""
    begin, end = _markers(key)
    block = "\n".join([begin, *lines, end])
    text = log.read_text(encoding="utf-8") if log.is_file() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    elif HEADING in text:
        at = text.index(HEADING) + len(HEADING)
        text = text[:at] + "\n\n" + block + text[at:]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + f"{HEADING}\n\n{block}\n"
    return atomic_write_text(log, text if text.endswith("\n") else text + "\n")


def generated_lines(data_file: Path, *, generator: str, n: int, seed: int, templates: list[str],
                    version: str) -> list[str]:
    return [f"- generated: {n} examples by `{generator}` (quantgrid {version}), seed {seed}",
            f"- templates: {', '.join(templates)}",
            "- answers are computed by quantgrid's formulas from the generated inputs; no third-party text"]


# ---------------------------------------------------------------- review sample


@dataclass(frozen=True)
class ReviewSample:
    path: Path
    n_total: int
    indices: list[int]
    seed: int
    fraction: float


def draw_sample(n_total: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a reproducible sample of ``fraction`` of ``n_total`` records (at least one)."""
    if not 0 < fraction <= 1:
        raise DataError(f"--fraction must be in (0, 1], got {fraction}", hint="e.g. --fraction 0.1 reviews 10%")
    if n_total == 0:
        raise DataError("the dataset is empty: there is nothing to review")
    k = max(1, -(-int(round(fraction * n_total * 1e6)) // 1_000_000))  # ceil, robust to float noise
    return sorted(random.Random(seed).sample(range(n_total), min(k, n_total)))


def write_review_file(records: list[dict], indices: list[int], out: Path) -> Path:
    """The sampled records, each with its line number and an empty ``review`` field to fill in."""
    rows = [json.dumps({"line": i + 1, **records[i], REVIEW_FIELD: None}, ensure_ascii=False) for i in indices]
    return atomic_write_text(out, "\n".join(rows) + "\n")


def review_counts(review_file: Path) -> tuple[int, int, int]:
    """(sampled, reviewed, rejected) of a filled-in review file."""
    sampled = reviewed = rejected = 0
    for n, line in enumerate(review_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"{review_file}:{n}: not valid JSON",
                            hint=f"each line is one record with \"{REVIEW_FIELD}\": \"accept\" or \"reject\"") from None
        sampled += 1
        verdict = row.get(REVIEW_FIELD) if isinstance(row, dict) else None
        if verdict in (None, ""):
            continue
        if verdict not in (ACCEPT, REJECT):
            raise DataError(f"{review_file}:{n}: {REVIEW_FIELD}={verdict!r}",
                            hint=f"write \"{ACCEPT}\" or \"{REJECT}\" (or leave it null while reviewing)")
        reviewed += 1
        rejected += verdict == REJECT
    return sampled, reviewed, rejected


def review_lines(data_file: Path, n_total: int, sample: list[int] | None, fraction: float, seed: int, *,
                 model: str | None, prompt_file: Path | None, counts: tuple[int, int, int] | None) -> list[str]:
    lines = [f"- reviewed set: {n_total} examples"
             + (f" generated with the model `{model}`" if model else "")]
    if prompt_file is not None:
        lines.append(f"- prompt file: sha256 {sha256_file(prompt_file)[:16]}")
    if sample is not None:
        lines.append(f"- review sample: {len(sample)} of {n_total} ({len(sample) / n_total:.0%}; --fraction "
                     f"{fraction:g}, seed {seed})")
    if counts is not None:
        sampled, reviewed, rejected = counts
        rate = f"{rejected / reviewed:.0%}" if reviewed else "n/a"
        lines.append(f"- reviewed by hand: {reviewed} of {sampled} sampled ({reviewed / n_total:.0%} of the set); "
                     f"rejected {rejected} (rejection rate {rate})")
        if reviewed < MIN_REVIEW_FRACTION * n_total:
            lines.append(f"- review incomplete: at least {MIN_REVIEW_FRACTION:.0%} of the set must be reviewed")
    return lines


__all__ = ["draw_sample", "generated_lines", "log_for", "record", "record_generated", "review_counts", "review_lines",
           "write_review_file"]


def record_generated(data_file: Path, *, n: int, seed: int, topics: list[str], concepts: bool) -> Path | None:
    """Record ``quantgrid data finance`` output in the adapter's log (when it went into training/)."""
    from quantgrid import __version__

    log = log_for(data_file)
    if log is None:
        return None
    lines = generated_lines(data_file, generator="quantgrid data finance", n=n, seed=seed,
                            templates=[f"finance/{t}" for t in topics] + (["finance/concepts (hand-written)"]
                                                                            if concepts else []),
                            version=__version__)
    return record(log, entry_key("generated", data_file), lines)
