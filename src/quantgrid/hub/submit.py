"""The contributor's side of a submission: package, verify, and the pre-flight checklist.

``prepare_submission`` turns an adapter directory into ``quantgrid_submission_<ts>.zip``
holding only the allowlisted files (``quantgrid.archive``) and a manifest that hashes exactly
them; raw training data never goes in. ``verify_submission`` re-reads a zip with the
hub's own archive reader, so what passes here passes the hub's archive checks.
``run_checklist`` is ``quantgrid check``: the things a reviewer would ask before
accepting a contribution, each answered ✓ or ✗ with a reason.

Torch-free, like ``quantgrid.adapter``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.adapter import (
    ALLOWED_DIRS,
    CONFIG,
    MANIFEST,
    RAW_DATA_FILES,
    REQUIRED_FILES,
    TRAIN_CONFIG,
    WEIGHTS,
    Manifest,
    build_submission_zip,
    hashed_files,
    is_submission_file,
    left_out_reason,
    read_manifest,
    submission_files,
)
from quantgrid.errors import DataError, ValidationError
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
    reasons: dict[str, str] = field(default_factory=dict)  # left-out file -> why
    reduced: dict[str, str] = field(default_factory=dict)  # packaged file -> what was removed from it
    name: str | None = None  # the registry name in the manifest
    improves: str | None = None

    def summary_lines(self) -> list[str]:
        """What went in, what was left out and why, and what was reduced: for people."""
        lines = [f"Packaged {len(self.files)} files: {', '.join(self.files)}"]
        if self.name:
            lines.append(f"Registry name: {self.name}" + (f", a new version of {self.improves}" if self.improves
                                                          else "") + " (set with --name / --improves)")
        for rel, how in self.reduced.items():
            lines.append(f"Reduced {rel}: {how}")
        for rel in self.left_out:
            lines.append(f"Left out {rel}: {self.reasons.get(rel, 'not part of a submission')}")
        return lines


def _say(quiet: bool, *lines: str) -> None:
    if not quiet:
        for line in lines:
            print(line)


def prepare_submission(adapter_dir: str | Path, author_name: str, dataset_desc: str, out_dir: str | Path = ".",
                       *, quiet: bool = False) -> Path:
    """Write ``quantgrid_submission_<unix-ts>.zip`` into ``out_dir`` and print its sha256."""
    return package(adapter_dir, author_name, dataset_desc, out_dir, quiet=quiet).path


def public_contents(adapter_dir: Path, files: list[str]) -> tuple[dict[str, bytes], dict[str, str], dict[str, str]]:
    """The bytes each packaged file goes in with: (contents, reduced: rel -> how, dropped: rel -> why).

    train_config.yaml and TRAINING_LOG.md lose every local path; results.json keeps only
    its aggregate numbers. A file that cannot be made public is dropped, with the reason.
    """
    import yaml

    from quantgrid.privacy import local_paths, public_results, public_train_config, redact_text

    contents, reduced, dropped = {}, {}, {}
    cfg_text = (adapter_dir / TRAIN_CONFIG).read_text(encoding="utf-8") if TRAIN_CONFIG in files else ""
    try:
        cfg = yaml.safe_load(cfg_text) if cfg_text else {}
    except yaml.YAMLError:
        cfg = None
    paths = local_paths(cfg if isinstance(cfg, dict) else None, adapter_dir)
    for rel in files:
        raw = (adapter_dir / rel).read_bytes()
        if rel == TRAIN_CONFIG:
            try:
                text, n = public_train_config(cfg_text, adapter_dir)
            except (ValueError, yaml.YAMLError):
                dropped[rel] = "not a readable YAML mapping, so its paths cannot be removed"
                continue
            contents[rel] = text.encode()
            if n:
                reduced[rel] = f"{n} local path(s) replaced by <local path>"
        elif rel == TRAINING_LOG:
            text, n = redact_text(raw.decode("utf-8", errors="replace"), paths)
            contents[rel] = text.encode()
            if n:
                reduced[rel] = f"{n} local path(s) replaced by <local path>"
        elif rel == RESULTS_FILE:
            try:
                contents[rel] = public_results(raw.decode("utf-8", errors="replace")).encode()
            except DataError as e:
                dropped[rel] = f"{e.message}; re-run `quantgrid eval`"
                continue
            reduced[rel] = "aggregate numbers only (no warnings, diagnoses, benchmark or adapter names)"
        else:
            contents[rel] = raw
    return contents, reduced, dropped


def _public_manifest(m: Manifest, contents: dict[str, bytes]) -> Manifest:
    """The manifest as submitted: the eval summary from the public results, no local base path."""
    from quantgrid.eval.results import EvalResults, EvalSummary
    from quantgrid.privacy import looks_like_path

    update: dict[str, Any] = {}
    if RESULTS_FILE in contents:
        update["eval"] = EvalSummary.of(EvalResults.model_validate_json(contents[RESULTS_FILE])).model_dump(mode="json")
    elif m.eval is not None:
        update["eval"] = None  # a summary of results that are not in the package
    if looks_like_path(m.base_model.name):
        update["base_model"] = m.base_model.model_copy(update={"name": m.recipe.get("base_model", "local base")})
    # The routing profile is words of the contributor's own questions, for their local `serve`
    # auto routing; the hub routes nothing by it, so it stays home.
    update["routing"] = None
    return m.model_copy(update=update)


def package(adapter_dir: str | Path, author_name: str, dataset_desc: str, out_dir: str | Path = ".",
            *, quiet: bool = False, name: str | None = None, improves: str | None = None) -> PreparedSubmission:
    """``prepare_submission`` with the details: which files went in, which were left out and why.

    ``name`` is the adapter's registry name (default: the manifest's, else the directory's);
    ``improves`` names the registered adapter this one is a new version of: the hub makes it
    that adapter's next version only if it beats the current one on the hidden benchmark.
    """
    from quantgrid.registry import name_problem, slug

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
    reg_name = name or old.name or slug(adapter_dir.resolve().name)
    for value, what, flag in ((reg_name, "name", "--name"), (improves or old.improves, "it improves", "--improves")):
        problem = name_problem(value, what) if value else None
        if problem:
            raise ValidationError(problem, hint=f"pass {flag} with a name like 'sec-filings'", check="package")
    files, left_out = submission_files(adapter_dir)
    files = [f for f in files if f != MANIFEST]
    # A file edited after training is worth a warning: the manifest's hash was the record.
    current = hashed_files(adapter_dir)
    stale = sorted(f for f in files if f in old.files and old.files[f] != current.get(f))
    contents, reduced, dropped = public_contents(adapter_dir, files)
    reasons = {f: left_out_reason(f) for f in left_out if f != MANIFEST} | dropped
    left_out = sorted(reasons)
    manifest = _public_manifest(old, contents).model_copy(update={
        "author": author_name.strip(), "name": reg_name, "improves": improves or old.improves,
        "dataset": old.dataset.model_copy(update={"description": dataset_desc.strip()}),
        "files": {f: sha256_bytes(b) for f, b in sorted(contents.items())},
    })
    out = Path(out_dir) / f"quantgrid_submission_{int(time.time())}.zip"
    build_submission_zip(adapter_dir, out, manifest, contents)
    digest = sha256_file(out)
    result = PreparedSubmission(out, digest, [*sorted(contents), MANIFEST], left_out, stale, reasons, reduced,
                                manifest.name, manifest.improves)
    _say(quiet, "READY FOR UPLOAD!", f"File: {out.name}", f"Hash: {digest}", *result.summary_lines())
    if stale:
        _say(quiet, f"warning: changed since the manifest was written: {', '.join(stale)}")
    return result


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
    from quantgrid.adapter import check_private

    files = read_zip(data, allowed=is_submission_file, allowed_dirs=frozenset(ALLOWED_DIRS))
    for name in REQUIRED_FILES:
        if name not in files:
            raise ValidationError(f"{path.name} has no {name}", hint="package it again", check="archive.missing")
    check_private(files)
    return check_manifest(files, None)


# ---------------------------------------------------------------- push: what users actually have


@dataclass(frozen=True)
class PushPlan:
    """The zip to upload and what was done to get it (for the user)."""

    path: Path
    action: str  # "as-is", "packaged", "repackaged"
    lines: list[str]


def _author_and_desc(d: Path) -> tuple[str, str]:
    m = read_manifest(d)
    if not (m.author or "").strip() or not (m.dataset.description or "").strip():
        raise ValidationError(f"{d} has no author or dataset description in its manifest, so it cannot be "
                              "packaged for you", hint=f"run `quantgrid package {d} --author NAME --dataset-desc "
                              "TEXT` and push the zip it writes", check="package")
    return m.author.strip(), m.dataset.description.strip()


def _adapter_zip_root(names: list[str]) -> str | None:
    """'' or 'folder/' when the zip holds an adapter directory (at its top or in one top-level folder)."""
    files = [n for n in names if not n.endswith("/")]
    if CONFIG in files:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = next(iter(tops)) + "/"
        if top + CONFIG in files:
            return top
    return None


def _extract_adapter(data: bytes, root: str, dest: Path) -> list[str]:
    """Copy the submission files of an adapter-directory zip into ``dest``; the other names, left out.

    Only the names a submission can hold are read (the datasets and reports in the zip are
    never extracted); each is checked like the hub checks names, and capped in size.
    """
    import io
    import zipfile

    from quantgrid.adapter import SUBMISSION_FILES
    from quantgrid.archive import Caps, check_name

    caps = Caps()
    left = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            rel = info.filename[len(root):]
            if rel not in SUBMISSION_FILES:
                left.append(rel)
                continue
            check_name(info.filename)
            if info.file_size > caps.entry_cap(rel):
                raise ValidationError(f"{info.filename} is {info.file_size} bytes, over the {caps.entry_cap(rel)} cap",
                                      check="archive.too_large")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src:
                body = src.read(caps.entry_cap(rel) + 1)
            if len(body) > caps.entry_cap(rel):
                raise ValidationError(f"{info.filename} expands past its cap", check="archive.bomb")
            out.write_bytes(body)
    return sorted(left)


def _verifies(path: Path) -> bool:
    try:
        verify_submission(path)
    except ValidationError:
        return False
    return True


def prepare_push(path: str | Path, out_dir: str | Path) -> PushPlan:
    """Turn what the user has into a submission zip, with the same privacy rules as ``package``.

    * a ``quantgrid package`` zip, or any file that is not an adapter directory zip: pushed as
      it is (the hub judges it and reports why it is rejected);
    * an adapter directory: packaged first (author and description from its manifest);
    * a zip of an adapter directory (``zip -r adapter.zip ./adapter``, one top-level
      folder or none): its submission files are read and packaged again; datasets,
      benchmarks and reports in it are never extracted.
    """
    import tempfile

    path = Path(path)
    if path.is_dir():
        author, desc = _author_and_desc(path)
        res = package(path, author, desc, out_dir, quiet=True)
        return PushPlan(res.path, "packaged", [f"{path} is an adapter directory: packaged it as {res.path.name}",
                                               *res.summary_lines()])
    if not path.is_file():
        raise DataError(f"no such file or directory: {path}",
                          hint="push an adapter directory, or the zip `quantgrid package` wrote")
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    root = _adapter_zip_root(names)
    if root is None or (root == "" and MANIFEST in names and _verifies(path)):
        # A package (or something the hub will judge and reject with a report).
        return PushPlan(path, "as-is", [f"pushing {path.name} as it is"])
    data = path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="quantgrid-push-") as tmp:
        from quantgrid.registry import slug

        d = Path(tmp) / slug(root.rstrip("/") or path.stem)
        d.mkdir()
        never = _extract_adapter(data, root, d)
        author, desc = _author_and_desc(d)
        res = package(d, author, desc, out_dir, quiet=True)
    where = f"folder {root!r}" if root else "its top level"
    lines = [f"{path.name} is a zip of an adapter directory ({where}): repackaged it as {res.path.name}",
             *[line for line in res.summary_lines() if not line.startswith("Left out")]]
    reasons = {rel: left_out_reason(rel) for rel in never} | dict(zip(res.left_out, map(res.reasons.get, res.left_out),
                                                                      strict=True))
    lines += [f"Left out {rel}: {why}" for rel, why in sorted(reasons.items()) if rel != MANIFEST]
    return PushPlan(res.path, "repackaged", lines)


# ---------------------------------------------------------------- the checklist


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.reason}"


def _load_results(path: Path) -> tuple[Any, str | None]:
    """(EvalResults or None, why it could not be read)."""
    from quantgrid.eval.results import EvalResults

    if not path.is_file():
        return None, f"{RESULTS_FILE} is missing (run `quantgrid eval --write-into-adapter`)"
    try:
        return EvalResults.read(path), None
    except DataError as e:
        return None, e.message


def _files_present(d: Path) -> CheckItem:
    needed = [*REQUIRED_FILES, TRAINING_LOG, RESULTS_FILE, BENCHMARK_FILE]
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        return CheckItem("files", False, f"missing {', '.join(missing)} (run `quantgrid train` and `quantgrid eval`)")
    off = [f for f in submission_files(d)[1] if f not in RAW_DATA_FILES]
    extra = f"; {len(off)} other file(s) will be left out" if off else ""
    return CheckItem("files", True, f"{', '.join(needed)} present{extra}")


_RECORDS_READ = re.compile(r"Records read:\s*([\d,]+);\s*skipped as invalid:\s*([\d,]+)")


def supplied_examples(d: Path, m: Manifest | None) -> tuple[int | None, str]:
    """How many examples the contributor supplied, before any eval split: (count, where it was read)."""
    raw = d / RAW_DATA_FILES[0]
    if raw.is_file():
        from quantgrid.data import load_examples

        try:
            return len(load_examples(raw)), RAW_DATA_FILES[0]
        except Exception:  # noqa: BLE001 - an unreadable dataset falls back to the training log
            pass
    log = d / TRAINING_LOG
    if log.is_file():
        found = _RECORDS_READ.search(log.read_text(encoding="utf-8", errors="replace"))
        if found:
            n_read, n_bad = (int(g.replace(",", "")) for g in found.groups())
            return n_read - n_bad, TRAINING_LOG
    n = ((m.dataset.fingerprint if m else None) or {}).get("n_examples")
    return (n, "the manifest's fingerprint (after the eval split)") if isinstance(n, int) else (None, "")


def _fingerprint(d: Path, m: Manifest | None) -> CheckItem:
    n, where = supplied_examples(d, m)
    if n is None:
        return CheckItem("training data", False, "no example count: the manifest has no dataset fingerprint and "
                                                 f"{TRAINING_LOG} records no `Records read`")
    if n < MIN_TRAIN_EXAMPLES:
        return CheckItem("training data", False, f"{n} training examples ({where}); at least "
                                                 f"{MIN_TRAIN_EXAMPLES} are needed")
    return CheckItem("training data", True, f"{n} training examples supplied ({where})")


def _read_jsonl(path: Path) -> list[dict] | None:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return rows


def _benchmark(d: Path, results: Any, m: Manifest | None) -> CheckItem:
    from quantgrid.data import fingerprint, load_examples

    name = "held-out benchmark"
    rows = _read_jsonl(d / BENCHMARK_FILE) if (d / BENCHMARK_FILE).is_file() else None
    if rows is None:
        return CheckItem(name, False, f"{BENCHMARK_FILE} is missing or not valid JSONL")
    if len(rows) < MIN_BENCHMARK_ITEMS:
        return CheckItem(name, False, f"{len(rows)} items; at least {MIN_BENCHMARK_ITEMS} are needed")
    bench = load_examples(d / BENCHMARK_FILE)
    bench_sha = fingerprint(bench)["sha256"]
    train_sha = ((m.dataset.fingerprint if m else None) or {}).get("sha256")
    if train_sha and train_sha == bench_sha:
        return CheckItem(name, False, "the benchmark is the training set (same dataset fingerprint)")
    raw = d / RAW_DATA_FILES[0]
    if raw.is_file():
        # The data is here (LocoLLM's layout), so check every item directly.
        from quantgrid.data.split import find_leakage

        leaks = find_leakage(load_examples(raw), bench)
        if not leaks.clean:
            return CheckItem(name, False, f"{len(leaks.leaked_bench)} of {len(rows)} items overlap the training data "
                                          f"({len(leaks.exact)} exact, {len(leaks.near)} near)")
        return CheckItem(name, True, f"{len(rows)} items, no exact or near overlap with {RAW_DATA_FILES[0]}")
    if results is None:
        return CheckItem(name, False, f"{len(rows)} items, but no leakage check is recorded (run `quantgrid eval`)")
    if results.overlap.leaks:
        return CheckItem(name, False, f"`quantgrid eval` found {results.overlap.n_overlapping or 'all'} of "
                                      f"{results.n_examples} items in the training data")
    if results.benchmark_fingerprint and results.benchmark_fingerprint != bench_sha:
        return CheckItem(name, False, f"{RESULTS_FILE} was measured on a different benchmark than {BENCHMARK_FILE} "
                                      "(fingerprints differ): re-run `quantgrid eval` on it")
    if results.overlap.checked_per_item:
        return CheckItem(name, True, f"{len(rows)} items; `quantgrid eval` found no overlap, item by item")
    return CheckItem(name, True, f"{len(rows)} items; `quantgrid eval` found no leakage (whole-set fingerprint; "
                                 f"keep {RAW_DATA_FILES[0]} or pass --train-data for a per-item check)")


def _improvement(results: Any, why: str | None) -> CheckItem:
    name = "improvement"
    if results is None:
        return CheckItem(name, False, why or f"{RESULTS_FILE} is missing")
    if results.adapter is None or results.loss.adapter is None:
        return CheckItem(name, False, f"{RESULTS_FILE} is a base-only run; evaluate the adapter "
                                      "(`quantgrid eval --adapter DIR --write-into-adapter`)")
    delta = results.loss.delta
    if delta is None or delta >= 0:
        return CheckItem(name, False, "the adapter's loss is not lower than the base's"
                         + (f" ({delta:+.4f} nats/token)" if delta is not None else ""))
    better = "higher" if results.higher_is_better else "lower"
    primary = "" if results.metric == "loss" or results.improvement is None else \
        f"; {results.metric} ({better} is better) improvement {results.improvement:+.1%}"
    if results.metric != "loss" and results.adapter_better is False:
        return CheckItem(name, False, f"the loss fell but the primary metric {results.metric} got worse{primary}")
    return CheckItem(name, True, f"loss {results.base_loss:.4f} -> {results.adapter_loss:.4f} nats/token "
                                 f"({delta:+.4f}){primary}")


def _ood(results: Any) -> CheckItem:
    name = "out-of-domain check"
    if results is None or results.ood is None:
        return CheckItem(name, False, f"{RESULTS_FILE} has no out-of-domain result (run `quantgrid eval` without "
                                      "`--ood none`)")
    o = results.ood
    change = f"{o.relative_change:+.1%}" if o.relative_change is not None else "n/a"
    if not o.passed:
        return CheckItem(name, False, f"the general-domain loss rose {change} on {o.benchmark} (allowed: "
                                      f"+{o.threshold:.0%})")
    return CheckItem(name, True, f"general-domain loss change {change} on {o.benchmark} (allowed: +{o.threshold:.0%})")


# A section the contributor wrote: a heading naming the data's sources or its provenance.
_SOURCES_HEADING = re.compile(r"^#{1,6}\s*(data sources?|sources of (the )?data|data provenance|"
                              r"synthetic[- ]data provenance)\s*$", re.I | re.M)
_COPYRIGHT_HEADING = re.compile(r"^#{1,6}\s*(copyright|licen[cs]e|data licen[cs]e|rights)\b.*$", re.I | re.M)
MIN_SECTION_WORDS = 5


def _section(text: str, heading: re.Pattern[str]) -> str | None:
    """The body of the first section whose heading matches, up to the next heading of any level."""
    m = heading.search(text)
    if m is None:
        return None
    rest = text[m.end():]
    nxt = re.search(r"^#{1,6}\s", rest, re.M)
    return (rest[: nxt.start()] if nxt else rest).strip()


def _words(text: str) -> int:
    return len(re.findall(r"[A-Za-z]{2,}", text))


def _log_section(d: Path, name: str, heading: re.Pattern[str], title: str, *, absent: str, short: str,
                 ok: str) -> CheckItem:
    """Check ``name``: TRAINING_LOG has a section under ``heading`` (shown as ``## title``) of at least
    MIN_SECTION_WORDS words. ``absent`` says what to write there, ``short`` what to add to it, and
    ``ok`` is the detail of a pass, with ``{words}`` the section's word count."""
    p = d / TRAINING_LOG
    body = _section(p.read_text(encoding="utf-8", errors="replace"), heading) if p.is_file() else None
    if body is None:
        return CheckItem(name, False, f"{TRAINING_LOG} has no '## {title}' section: {absent}")
    words = _words(body)
    if words < MIN_SECTION_WORDS:
        return CheckItem(name, False, f"the '## {title}' section has {words} word(s); {short} in at least "
                                      f"{MIN_SECTION_WORDS}")
    return CheckItem(name, True, ok.format(words=words))


def _data_sources(d: Path) -> CheckItem:
    name = "data sources documented"
    if not (d / TRAINING_LOG).is_file():
        return CheckItem(name, False, f"{TRAINING_LOG} is missing")
    return _log_section(d, name, _SOURCES_HEADING, "Data sources",
                        absent="say where the data came from (the data commands add one for generated data)",
                        short="describe the sources", ok=f"{TRAINING_LOG} documents the data sources ({{words}} words)")


def _copyright(d: Path) -> CheckItem:
    return _log_section(d, "copyright declaration", _COPYRIGHT_HEADING, "Copyright",
                        absent="declare that you may share an adapter trained on this data (its licence, or that "
                               "it is your own)",
                        short="state the licence or ownership", ok="declared in " + TRAINING_LOG)


def _registry_entry(d: Path, m: Manifest | None, results: Any) -> CheckItem:
    """What registry.yaml will list for this adapter: it needs a name, an author, a base and a score."""
    from quantgrid.registry import entry_problems

    problems = entry_problems(d, m, results)
    if problems:
        return CheckItem("registry entry", False, "; ".join(problems))
    return CheckItem("registry entry", True, f"{d.resolve().name} by {m.author if m else '?'} on "
                                             f"{m.base_model.name if m else '?'}")


def run_checklist(adapter_dir: str | Path) -> list[CheckItem]:
    """The contributor checklist, one ✓/✗ item per line with a reason. Every item can fail."""
    d = Path(adapter_dir)
    if not d.is_dir():
        raise ValidationError(f"adapter directory not found: {d}", hint="pass the directory `quantgrid train` wrote",
                              check="package")
    try:
        m = read_manifest(d)
    except Exception:  # noqa: BLE001 - a broken manifest is one ✗ line, not a crash
        m = None
    results, why = _load_results(d / RESULTS_FILE)
    return [_files_present(d), _fingerprint(d, m), _benchmark(d, results, m), _improvement(results, why),
            _ood(results), _data_sources(d), _copyright(d), _registry_entry(d, m, results)]


__all__ = ["CONFIG", "WEIGHTS", "CheckItem", "PreparedSubmission", "is_submission_file", "package", "prepare_submission",
           "prepare_push", "run_checklist", "verify_submission"]
