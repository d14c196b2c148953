"""The contributor's side of a submission: package, verify, and the pre-flight checklist.

``prepare_submission`` turns an adapter directory into ``quantgrid_submission_<ts>.zip``
holding only the allowlisted files (DESIGN §5) and a manifest that hashes exactly
them; raw training data never goes in. ``verify_submission`` re-reads a zip with the
hub's own archive reader, so what passes here passes the hub's archive checks.
``run_checklist`` is ``quantgrid check``: the things a reviewer would ask before
accepting a contribution, each answered ✓ or ✗ with a reason.

Torch-free, like ``quantgrid.adapter``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgrid.adapter import (
    ALLOWED_DIRS,
    CONFIG,
    MANIFEST,
    RAW_DATA_FILES,
    REQUIRED_FILES,
    WEIGHTS,
    Manifest,
    build_submission_zip,
    hashed_files,
    is_allowed_file,
    read_manifest,
    submission_files,
)
from quantgrid.errors import ValidationError
from quantgrid.utils import sha256_bytes, sha256_file

MIN_TRAIN_EXAMPLES = 500
MIN_BENCHMARK_ITEMS = 50
BENCHMARK_FILE = "eval/benchmark.jsonl"
RESULTS_FILE = "eval/results.json"
TRAINING_LOG = "training/TRAINING_LOG.md"


@dataclass(frozen=True)
class PreparedSubmission:
    path: Path
    sha256: str
    files: list[str]
    left_out: list[str]
    stale: list[str]  # files that changed since the adapter's manifest was written


def _say(quiet: bool, *lines: str) -> None:
    if not quiet:
        for line in lines:
            print(line)


def prepare_submission(adapter_dir: str | Path, author_name: str, dataset_desc: str, out_dir: str | Path = ".",
                       *, quiet: bool = False) -> Path:
    """Write ``quantgrid_submission_<unix-ts>.zip`` into ``out_dir`` and print its sha256."""
    return package(adapter_dir, author_name, dataset_desc, out_dir, quiet=quiet).path


def package(adapter_dir: str | Path, author_name: str, dataset_desc: str, out_dir: str | Path = ".",
            *, quiet: bool = False) -> PreparedSubmission:
    """``prepare_submission`` with the details: which files went in, which were left out."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise ValidationError(f"adapter directory not found: {adapter_dir}",
                              hint="pass the directory `quantgrid train` wrote", check="package")
    if not author_name.strip():
        raise ValidationError("--author is empty", hint="give the name to credit on the leaderboard", check="package")
    if not dataset_desc.strip():
        raise ValidationError("--dataset-desc is empty", hint="describe the data in a sentence (no raw data)",
                              check="package")
    missing = [f for f in REQUIRED_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise ValidationError(f"{adapter_dir} lacks {', '.join(missing)}",
                              hint="train with `quantgrid train`, which writes a complete adapter directory",
                              check="package")
    old = read_manifest(adapter_dir)
    files, left_out = submission_files(adapter_dir)
    # A file edited after training is worth a warning: the manifest's hash was the record.
    current = hashed_files(adapter_dir)
    stale = sorted(f for f in files if f in old.files and old.files[f] != current.get(f))
    manifest = old.model_copy(update={
        "author": author_name.strip(),
        "dataset": old.dataset.model_copy(update={"description": dataset_desc.strip()}),
        "files": {f: current[f] if f in current else sha256_file(adapter_dir / f) for f in files if f != MANIFEST},
    })
    out = Path(out_dir) / f"quantgrid_submission_{int(time.time())}.zip"
    build_submission_zip(adapter_dir, out, manifest)
    digest = sha256_file(out)
    raw = [f for f in left_out if f in RAW_DATA_FILES]
    other = [f for f in left_out if f not in RAW_DATA_FILES and f != MANIFEST]
    _say(quiet, "READY FOR UPLOAD!", f"File: {out.name}", f"Hash: {digest}")
    if raw:
        _say(quiet, f"Left out raw training data (never uploaded): {', '.join(raw)}")
    if other:
        _say(quiet, f"Left out {len(other)} file(s) not on the submission allowlist: {', '.join(other[:8])}"
                    + (" ..." if len(other) > 8 else ""))
    if stale:
        _say(quiet, f"warning: changed since the manifest was written: {', '.join(stale)}")
    return PreparedSubmission(out, digest, [f for f in files if f != MANIFEST] + [MANIFEST], left_out, stale)


def verify_submission(path: str | Path, expected_sha256: str | None = None) -> Manifest:
    """Re-check a package: its hash, the hub's archive rules, and the manifest's file hashes.

    The recipe/base checks need the hub's recipe and base, so they run on the hub;
    everything else that the hub's stage 1 checks is checked here.
    """
    from quantgrid.adapter import check_manifest
    from quantgrid.archive import read_zip

    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"no such file: {path}", hint="pass the zip `quantgrid package` wrote", check="package")
    data = path.read_bytes()
    if expected_sha256 and sha256_bytes(data) != expected_sha256.lower():
        raise ValidationError(f"{path.name} has sha256 {sha256_bytes(data)}, not {expected_sha256}",
                              hint="the file changed or is incomplete; package it again", check="package.hash")
    files = read_zip(data, allowed=is_allowed_file, allowed_dirs=frozenset(ALLOWED_DIRS))
    for name in REQUIRED_FILES:
        if name not in files:
            raise ValidationError(f"{path.name} has no {name}", hint="package it again", check="archive.missing")
    return check_manifest(files, None)


# ---------------------------------------------------------------- the checklist


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.reason}"


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _files_present(d: Path) -> CheckItem:
    needed = [*REQUIRED_FILES, TRAINING_LOG, RESULTS_FILE, BENCHMARK_FILE]
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        return CheckItem("files", False, f"missing {', '.join(missing)} (run `quantgrid train` and `quantgrid eval`)")
    off = [f for f in submission_files(d)[1] if f not in RAW_DATA_FILES]
    extra = f"; {len(off)} other file(s) will be left out" if off else ""
    return CheckItem("files", True, f"{', '.join(needed)} present{extra}")


def _fingerprint(m: Manifest | None) -> CheckItem:
    fp = (m.dataset.fingerprint if m else None) or {}
    n = fp.get("n_examples")
    if not isinstance(n, int):
        return CheckItem("training data", False, "the manifest has no dataset fingerprint with n_examples")
    if n < MIN_TRAIN_EXAMPLES:
        return CheckItem("training data", False, f"{n} training examples; at least {MIN_TRAIN_EXAMPLES} are needed")
    unique = fp.get("n_unique", n)
    return CheckItem("training data", True, f"{n} training examples ({unique} unique)")


def _read_jsonl(path: Path) -> list[dict] | None:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return rows


def _leakage_record(results: dict | None, m: Manifest | None) -> dict | None:
    """A leakage summary recorded by train/eval, wherever it was put."""
    for src in ((results or {}).get("leakage"), ((m.eval or {}) if m else {}).get("leakage"),
                (m.dataset.fingerprint if m else {}).get("leakage")):
        if isinstance(src, dict):
            return src
    return None


def _benchmark(d: Path, results: dict | None, m: Manifest | None) -> CheckItem:
    name = "held-out benchmark"
    rows = _read_jsonl(d / BENCHMARK_FILE) if (d / BENCHMARK_FILE).is_file() else None
    if rows is None:
        return CheckItem(name, False, f"{BENCHMARK_FILE} is missing or not valid JSONL")
    if len(rows) < MIN_BENCHMARK_ITEMS:
        return CheckItem(name, False, f"{len(rows)} items; at least {MIN_BENCHMARK_ITEMS} are needed")
    raw = d / RAW_DATA_FILES[0]
    if raw.is_file():
        # The contributor opted in to keeping the data here, so check it directly.
        from quantgrid.data import load_examples
        from quantgrid.data.split import find_leakage

        leaks = find_leakage(load_examples(raw), load_examples(d / BENCHMARK_FILE))
        if not leaks.clean:
            return CheckItem(name, False, f"{len(leaks.leaked_bench)} of {len(rows)} items overlap the training data "
                                          f"({len(leaks.exact)} exact, {len(leaks.near)} near)")
        return CheckItem(name, True, f"{len(rows)} items, no overlap with {raw.name}")
    rec = _leakage_record(results, m)
    if rec is not None:
        leaked = rec.get("leaked_bench_items", (rec.get("exact") or 0) + (rec.get("near") or 0))
        if leaked:
            return CheckItem(name, False, f"{leaked} of {len(rows)} items leak from the training data")
        return CheckItem(name, True, f"{len(rows)} items, leakage check clean")
    # `quantgrid eval` writes its overlap findings into results.json's warnings.
    warned = [w for w in (results or {}).get("warnings", []) if isinstance(w, str) and "training" in w]
    if warned:
        return CheckItem(name, False, warned[0])
    from quantgrid.data import fingerprint, load_examples

    train_sha = ((m.dataset.fingerprint if m else None) or {}).get("sha256")
    if train_sha and train_sha == fingerprint(load_examples(d / BENCHMARK_FILE))["sha256"]:
        return CheckItem(name, False, "the benchmark is the training set (same dataset fingerprint)")
    if results is None:
        return CheckItem(name, False, f"{len(rows)} items, but no leakage check is recorded (run `quantgrid eval`)")
    return CheckItem(name, True, f"{len(rows)} items; `quantgrid eval` found no leakage (whole-set fingerprint; "
                                 f"keep {RAW_DATA_FILES[0]} for a per-item check)")


def _nats(v: object) -> float:
    """A loss as results.json records it: a number, or {"mean_nats_per_token": x, ...}."""
    if isinstance(v, dict):
        v = v.get("mean_nats_per_token")
    return float(v) if isinstance(v, (int, float)) else float("nan")


def _improvement(results: dict | None) -> CheckItem:
    name = "improvement"
    if results is None:
        return CheckItem(name, False, f"{RESULTS_FILE} is missing or not JSON (run `quantgrid eval`)")
    loss = results.get("loss") or {}
    delta = loss.get("delta") if isinstance(loss, dict) else None
    if isinstance(delta, (int, float)):
        if delta < 0:
            return CheckItem(name, True, f"loss {_nats(loss.get('base')):.4f} -> "
                                         f"{_nats(loss.get('adapter')):.4f} nats/token ({delta:+.4f})")
        return CheckItem(name, False, f"the adapter's loss is not lower than the base's ({delta:+.4f} nats/token)")
    imp = results.get("improvement")
    if isinstance(imp, (int, float)):
        return CheckItem(name, imp > 0, f"{results.get('metric', 'score')} improvement {imp:+.4f}")
    return CheckItem(name, False, f"{RESULTS_FILE} records no loss delta or improvement")


def _ood(results: dict | None) -> CheckItem:
    name = "out-of-domain check"
    ood = (results or {}).get("ood")
    if not ood:
        return CheckItem(name, False, "results.json has no `ood` section (run `quantgrid eval`, which includes it)")
    if isinstance(ood, dict):
        bits = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in ood.items()
                if isinstance(v, (int, float, str, bool)) and k in ("delta", "base", "adapter", "passed", "n")]
        if ood.get("passed") is False:
            return CheckItem(name, False, "ran, and the general-domain loss rose: " + ", ".join(bits))
        return CheckItem(name, True, "ran: " + (", ".join(bits) or "recorded"))
    return CheckItem(name, True, "ran")


_SOURCE_WORDS = ("source", "dataset", "data:", "data from", "collected", "builtin:", ".jsonl", ".json", "licen")


def _training_log(d: Path) -> CheckItem:
    name = "TRAINING_LOG.md"
    p = d / TRAINING_LOG
    if not p.is_file():
        return CheckItem(name, False, f"{TRAINING_LOG} is missing")
    text = p.read_text(encoding="utf-8", errors="replace").lower()
    if not any(w in text for w in _SOURCE_WORDS):
        return CheckItem(name, False, "does not document the data sources (add a 'Data sources' section)")
    return CheckItem(name, True, "documents the data sources")


def run_checklist(adapter_dir: str | Path) -> list[CheckItem]:
    """The contributor checklist, one ✓/✗ item per line with a reason."""
    d = Path(adapter_dir)
    if not d.is_dir():
        raise ValidationError(f"adapter directory not found: {d}", hint="pass the directory `quantgrid train` wrote",
                              check="package")
    try:
        m = read_manifest(d)
    except Exception:  # noqa: BLE001 - a broken manifest is one ✗ line, not a crash
        m = None
    results = _load_json(d / RESULTS_FILE)
    return [_files_present(d), _fingerprint(m), _benchmark(d, results, m), _improvement(results), _ood(results),
            _training_log(d)]


__all__ = ["CONFIG", "WEIGHTS", "CheckItem", "PreparedSubmission", "is_allowed_file", "package", "prepare_submission",
           "run_checklist", "verify_submission"]
