"""What of an adapter directory may leave the contributor's machine, and in what form.

A submission carries weights, the adapter config, the manifest, the training log and
plot, the training settings and aggregate eval numbers. Everything that can hold the
contributor's own text stays home: datasets, benchmark items, generated answers,
per-example values, reports that quote them, and local paths (a path names the user's
machine and how they name their projects).

Two sides use this module:

* the client (``quantgrid package`` / ``push``) writes *public copies*: the settings
  with every local path replaced by a placeholder, the training log with those paths
  removed, and results.json reduced to its numbers (``EvalResults.public``);
* the hub's static checks (:func:`check_public_entries`) reject a zip whose entries
  still hold such things, so an old or modified client cannot leak them either.

Torch-free: the hub's stage 1 and the thin client both import it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LOCAL_PATH = "<local path>"
# train_config.yaml `run` settings that hold a path on the training machine.
RUN_PATH_KEYS = ("dataset", "output_dir", "base_model_path", "eval_dataset", "config", "resume_from")
# Sources that name quantgrid's or the hub's own data, not the user's.
PUBLIC_PREFIXES = ("builtin:", "hub:")

# An absolute path as it appears in text: /x/y, ~/x, C:\x or C:/x, not preceded by a word
# character, a dot, a slash or a colon (so "tokens/s", "1/2" and "https://host/x" are not paths).
_ABS_PATH = re.compile(r"(?<![\w.:/~\\-])(?:~(?=/)|/(?=[\w.~-])|[A-Za-z]:[\\/])[\w.@+~-]*(?:[\\/][\w.@+~ -]*[\w.@+~-])*")
# The hub's stricter view for free text it cannot parse: a path under a typical user or
# mount root. A generic "/x/y" may be an API route in a log, so only these are refused.
_USER_PATH = re.compile(r"(?<![\w.:/~-])(?:~/|/(?:home|Users|root|content|mnt|media|tmp|var|private|data|"
                        r"workspace|opt|srv|scratch|gpfs|drive)/|[A-Za-z]:[\\/])")


def looks_like_path(value: str) -> bool:
    """True for a string that names a local file or directory rather than a model id or builtin set."""
    if not value or value.startswith(PUBLIC_PREFIXES):
        return False
    if value.startswith(("/", "./", "../", "~", ".\\", "..\\")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return True
    if value.endswith((".jsonl", ".json", ".csv", ".parquet", ".txt", ".yaml", ".yml")):
        return True
    # "org/name" is a Hugging Face model id; a relative directory that exists here is a path.
    return "\\" in value or (os.sep in value and Path(value).exists()) or (
        os.sep not in value and Path(value).is_dir())


def local_paths(train_config: dict[str, Any] | None, adapter_dir: Path | None = None) -> list[str]:
    """Every local path named in a train_config.yaml mapping (and the adapter's own), longest first."""
    found: set[str] = set()
    run = (train_config or {}).get("run") if isinstance(train_config, dict) else None
    if isinstance(run, dict):
        for key in RUN_PATH_KEYS:
            v = run.get(key)
            if isinstance(v, str) and looks_like_path(v):
                found.add(v)
                found.add(str(Path(v).expanduser().resolve()))
    if adapter_dir is not None:
        found.add(str(adapter_dir.resolve()))
    home = str(Path.home())
    if len(home) > 1:
        found.add(home)
    return sorted((p for p in found if len(p) > 1), key=len, reverse=True)


def redact_text(text: str, paths: Iterable[str] = ()) -> tuple[str, int]:
    """(text with every given local path and any absolute path replaced, number of replacements)."""
    n = 0
    for p in paths:
        if p and p in text:
            n += text.count(p)
            text = text.replace(p, LOCAL_PATH)
    text, k = _ABS_PATH.subn(LOCAL_PATH, text)
    return text, n + k


def public_train_config(text: str, adapter_dir: Path | None = None) -> tuple[str, int]:
    """train_config.yaml with every path setting replaced by a placeholder; (yaml, replacements)."""
    import yaml

    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("train_config.yaml is not a mapping")
    paths = local_paths(data, adapter_dir)
    n = 0
    run = data.get("run")
    if isinstance(run, dict):
        for key in RUN_PATH_KEYS:
            v = run.get(key)
            if isinstance(v, str) and looks_like_path(v):
                run[key] = LOCAL_PATH
                n += 1

    def walk(o: Any) -> Any:
        nonlocal n
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, str) and o != LOCAL_PATH:
            new, k = redact_text(o, paths)
            n += k
            return new
        return o

    data = walk(data)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), n


def public_results(text: str) -> str:
    """results.json reduced to its aggregate numbers (raises DataError when it is not a results file)."""
    from quantgrid.eval.results import EvalResults

    try:
        data = json.loads(text)
    except ValueError as e:
        from quantgrid.errors import DataError

        raise DataError(f"eval/results.json is not valid JSON ({str(e)[:80]})") from None
    return EvalResults.parse_obj_or_error(data, "eval/results.json").public().to_json()


# ---------------------------------------------------------------- the hub's side


def _strings(o: Any) -> Iterable[str]:
    if isinstance(o, dict):
        for k, v in o.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(o, list):
        for v in o:
            yield from _strings(v)
    elif isinstance(o, str):
        yield o


def private_content(name: str, body: bytes) -> str | None:
    """Why an allowed entry still holds private content, or None when it is clean."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None  # binary entries (weights, png) are checked elsewhere
    if name.endswith("train_config.yaml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return "is not valid YAML"
        run = data.get("run") if isinstance(data, dict) else None
        if isinstance(run, dict):
            for key in RUN_PATH_KEYS:
                v = run.get(key)
                if isinstance(v, str) and v != LOCAL_PATH and looks_like_path(v):
                    return f"names a local path in run.{key}"
        values = list(_strings(data))
    elif name.endswith("results.json"):
        from quantgrid.eval.results import EvalResults

        try:
            data = json.loads(text)
            results = EvalResults.parse_obj_or_error(data, name)
        except Exception:  # noqa: BLE001 - an unreadable results file is itself the finding
            return "is not a quantgrid results file"
        if results.warnings or results.diagnoses or (results.verdict and results.verdict.reasons):
            return "holds free text (warnings, diagnoses or reasons), which can quote benchmark items"
        public = json.loads(results.public().to_json())
        if data != public:
            extra = sorted(set(_strings(data)) - set(_strings(public)))
            return f"holds more than the aggregate numbers ({(extra or ['a per-item field'])[0][:60]!r})"
        values = list(_strings(data))
    else:
        values = [text]
    for v in values:
        m = _USER_PATH.search(v)
        if m:
            return f"contains a local path ({v[m.start():m.start() + 40]!r}...)"
    return None


__all__ = ["LOCAL_PATH", "local_paths", "looks_like_path", "private_content", "public_results",
           "public_train_config", "redact_text"]
