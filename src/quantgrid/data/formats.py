"""Every dataset schema users bring -> ``Example``; a registry, auto-detection, file:line errors.

A file is a JSON array or JSONL (one object per line). Its schema is detected from the
first good record, and every record must then use that schema (``format=`` overrides
the detection). Every problem is reported with the file, the line (JSONL) or index
(JSON array) and what is wrong; ``lenient=True`` skips bad records and lists them.

Formats are a registry (``FORMATS``): each knows its required keys, how to turn a
record into an ``Example`` (``parse``) and how to write one back (``dump``), so
``data normalize`` writes the schema it read.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.data.prompts import split_context
from quantgrid.data.types import Example
from quantgrid.errors import DataError

log = logging.getLogger(__name__)

# Limits that keep a hostile or mistaken file from exhausting memory or the parser's stack.
# Anything larger than this is almost surely the wrong file.
MAX_DATASET_BYTES = 512 * 1024 * 1024
# A JSON array is parsed as one document (the standard library has no incremental parser), so
# it is capped lower; JSONL is read one line at a time and may be as large as MAX_DATASET_BYTES.
MAX_JSON_ARRAY_BYTES = 64 * 1024 * 1024
# One JSONL line is one record; a longer line is refused before it is held in memory whole.
MAX_LINE_BYTES = 8 * 1024 * 1024
# Records are flat or a few levels deep; deeper nesting is refused (with its line) before it
# can reach the parser's recursion limit.
MAX_JSON_DEPTH = 32

QA_EXTRAS = ("rationale", "tickers", "citations", "context_required", "risk_note")
ANSWER_MARKERS = ("Answer:", "### Response:", "[/INST]")


class RecordError(ValueError):
    """A problem with one record; the loader adds the file and line."""


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]
    description: str
    parse: Callable[[dict[str, Any]], Example]
    dump: Callable[[Example], dict[str, Any]]


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


# ---------------------------------------------------------------- field checks


def _text(rec: dict, key: str, *, allow_empty: bool = False, allow_number: bool = False) -> str:
    v = rec.get(key)
    if allow_number and isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v) if isinstance(v, float) else str(v)
    if not isinstance(v, str):
        kinds = "a string or a number" if allow_number else "a string"
        raise RecordError(f"field {key!r} must be {kinds}, got {_kind(v)}")
    if not allow_empty and not v.strip():
        raise RecordError(f"field {key!r} is empty")
    return v


def _completion(rec: dict, key: str, *, allow_number: bool = False) -> str:
    v = _text(rec, key, allow_empty=True, allow_number=allow_number)
    if not v.strip():
        raise RecordError(f"empty completion: field {key!r} has no text to train on")
    return v


def _optional_text(rec: dict, key: str) -> str | None:
    v = rec.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise RecordError(f"field {key!r} must be a string, got {_kind(v)}")
    return v or None


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _extras(rec: dict, used: set[str]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in used}


# ---------------------------------------------------------------- the formats


def _parse_text(rec: dict) -> Example:
    text = _completion(rec, "text")
    extras = _extras(rec, {"text"})
    for marker in ANSWER_MARKERS:
        head, sep, tail = text.partition(marker)
        if sep and tail.strip() and head.strip():
            context, prompt = _split_headers(head)
            return Example(prompt=prompt, completion=tail.strip(), context=context, meta=extras)
    # No answer marker: train on the whole text.
    return Example(prompt="", completion=text, meta=extras)


def _split_headers(head: str) -> tuple[str | None, str]:
    """'Context: c\\nQuestion: q\\n' -> (c, q); any other head is the prompt as it is."""
    m = re.fullmatch(r"\s*(?:Context:\s*(?P<c>.*?)\s*\n)?\s*Question:\s*(?P<q>.*?)\s*", head, re.S)
    if m:
        return (m.group("c") or None), m.group("q")
    return None, head.strip()


def _dump_text(ex: Example) -> dict:
    if not ex.prompt:
        return {"text": ex.completion}
    head = f"Context: {ex.context}\n" if ex.context else ""
    return {"text": f"{head}Question: {ex.prompt}\nAnswer: {ex.completion}", **_plain_meta(ex)}


def _parse_instruction(rec: dict) -> Example:
    out_key = "output" if "output" in rec else "completion"
    prompt = _text(rec, "instruction")
    context = _optional_text(rec, "input") if "input" in rec else None
    return Example(prompt=prompt, completion=_completion(rec, out_key), context=context,
                   meta=_extras(rec, {"instruction", "input", out_key}))


def _dump_alpaca(ex: Example) -> dict:
    return {"instruction": ex.prompt, "input": ex.context or "", "output": ex.completion, **_plain_meta(ex)}


def _dump_instruction_output(ex: Example) -> dict:
    d = {"instruction": ex.prompt, "output": ex.completion}
    if ex.context:
        d["input"] = ex.context
    return {**d, **_plain_meta(ex)}


def _dump_instruction_completion(ex: Example) -> dict:
    d = {"instruction": ex.prompt, "completion": ex.completion}
    if ex.context:
        d["input"] = ex.context
    return {**d, **_plain_meta(ex)}


def _parse_qa(rec: dict) -> Example:
    meta = _extras(rec, {"question", "answer", "context"})
    answer = rec.get("answer")
    completion = _completion(rec, "answer", allow_number=True)
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        meta.setdefault("answer_value", float(answer))
    for key in ("tickers",):
        if key in rec and not (isinstance(rec[key], list) and all(isinstance(t, str) for t in rec[key])):
            raise RecordError(f"field {key!r} must be an array of strings, got {_kind(rec[key])}")
    if "citations" in rec and not isinstance(rec["citations"], list):
        raise RecordError(f"field 'citations' must be an array, got {_kind(rec['citations'])}")
    if "context_required" in rec and not isinstance(rec["context_required"], bool):
        raise RecordError(f"field 'context_required' must be true or false, got {_kind(rec['context_required'])}")
    for key in ("rationale", "risk_note"):
        _optional_text(rec, key)
    return Example(prompt=_text(rec, "question"), completion=completion,
                   context=_optional_text(rec, "context"), meta=meta)


def _dump_qa(ex: Example) -> dict:
    return ex.to_dict()


def _parse_messages(rec: dict) -> Example:
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RecordError(f"field 'messages' must be a non-empty array, got {_kind(msgs)}")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError(f"messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise RecordError(f"messages[{i}] has role {m['role']!r}; use system, user or assistant")
    if msgs[-1]["role"] != "assistant":
        raise RecordError("the last message must be the assistant's answer (role 'assistant')")
    if not msgs[-1]["content"].strip():
        raise RecordError("empty completion: the last assistant message has no text")
    if len(msgs) < 2 or msgs[-2]["role"] != "user":
        raise RecordError("the assistant's answer must follow a user message")
    if not msgs[-2]["content"].strip():
        raise RecordError(f"messages[{len(msgs) - 2}] (user) is empty")
    meta = _extras(rec, {"messages"})
    system = [m["content"] for m in msgs if m["role"] == "system"]
    if system:
        meta["system"] = "\n".join(system)
    history = [{"role": m["role"], "content": m["content"]} for m in msgs[:-2] if m["role"] != "system"]
    if history:
        meta["history"] = history
    # The layout _dump_messages (and the chat prompt) uses for grounded questions.
    prompt, context = split_context(msgs[-2]["content"])
    return Example(prompt=prompt, completion=msgs[-1]["content"], context=context, meta=meta)


def _dump_messages(ex: Example) -> dict:
    msgs = []
    if ex.meta.get("system"):
        msgs.append({"role": "system", "content": ex.meta["system"]})
    msgs += list(ex.meta.get("history", []))
    user = f"Context: {ex.context}\n\nQuestion: {ex.prompt}" if ex.context else ex.prompt
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": ex.completion}]
    return {"messages": msgs, **_plain_meta(ex, skip=("system", "history"))}


def _plain_meta(ex: Example, skip: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in ex.meta.items() if k not in ("source", "line", *skip)}


# Most specific first: detection picks the first whose required keys a record has.
for _f in (
    Format("messages", ("messages",), "OpenAI chat: {messages: [{role, content}, ...]}", _parse_messages, _dump_messages),
    Format("alpaca", ("instruction", "input", "output"), "Alpaca / LocoLLM: {instruction, input, output}",
           _parse_instruction, _dump_alpaca),
    Format("instruction_output", ("instruction", "output"), "{instruction, output}",
           _parse_instruction, _dump_instruction_output),
    Format("instruction_completion", ("instruction", "completion"), "{instruction, completion}",
           _parse_instruction, _dump_instruction_completion),
    Format("qa", ("question", "answer"), "{question, answer} + optional context, rationale, tickers, "
           "citations, context_required, risk_note", _parse_qa, _dump_qa),
    Format("text", ("text",), '{text: "Question: ...\\nAnswer: ..."}; no answer marker trains on the whole text',
           _parse_text, _dump_text),
):
    register_format(_f)


def detect_format(record: Any) -> Format | None:
    if not isinstance(record, dict):
        return None
    for fmt in FORMATS.values():
        if all(k in record for k in fmt.required):
            return fmt
    return None


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise DataError(f"unknown dataset format {name!r}",
                        hint=f"choose one of: {', '.join(FORMATS)} (or leave --format out to detect it)") from None


# ---------------------------------------------------------------- reading files


@dataclass(frozen=True)
class Skipped:
    """One record ``lenient`` loading skipped: where it is and why."""

    location: str
    reason: str


@dataclass
class LoadReport:
    source: str
    format: str
    examples: list[Example]
    skipped: list[Skipped] = field(default_factory=list)
    container: str = "jsonl"  # "jsonl" or "json"

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def _check_file(path: Path, max_bytes: int) -> int:
    """The file's size, after checking it exists, is a file, is not empty and not too large."""
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check the path, or use a built-in set: `quantgrid data list`")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a dataset file", hint="pass a .jsonl or .json file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(
            f"{path}: {size / 2**20:.1f} MiB is too large to be a dataset (limit {max_bytes / 2**20:.0f} MiB)",
            hint="check that this is the right file, or split it into several smaller files")
    return size


def _head(path: Path) -> bytes:
    """The file's first bytes without a UTF-8 BOM and leading blanks (empty file: DataError)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        while head and not head.lstrip(b"\xef\xbb\xbf \t\r\n"):
            more = f.read(1 << 16)
            if not more:
                break
            head = more
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head:
        raise DataError(f"{path}: the file is empty", hint="a dataset is a JSON array or JSONL with one record per line")
    return head


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x})",
                        hint="save the file as UTF-8") from None


# A JSON string (skipped whole, so brackets inside it do not count) or one bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _too_deep_at(text: str, limit: int) -> int | None:
    """Offset where nesting first goes past ``limit`` levels, or None. A scan, not a parse, so
    it cannot itself recurse."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return m.start()
        elif c in "]}":
            depth -= 1
    return None


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON (iterative)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


_DEPTH_HINT = f"records nest at most {MAX_JSON_DEPTH} levels deep; check that this is a dataset file"


def _records(path: Path, lenient: bool, skipped: list[Skipped], size: int) -> tuple[str, Iterator[tuple[str, Any]]]:
    """(container, iterator of (location, record)) with JSON/UTF-8 problems raised or, lenient, skipped."""
    head = _head(path)
    if head[:1] == b"[":
        return "json", iter(_json_array(path, size))
    first_line = head.split(b"\n", 1)[0]
    if first_line[:1] == b"{" and b"\n" in head.rstrip() and not _parses(first_line) and size <= MAX_JSON_ARRAY_BYTES:
        # One pretty-printed object spread over lines is not a dataset (JSONL is one object per line).
        text = path.read_bytes().decode("utf-8", errors="replace")
        if _too_deep_at(text, MAX_JSON_DEPTH) is None:
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                raise DataError(f"{path}: a JSON file must hold an array of records, got one object",
                                hint="wrap the records in [ ... ] or write one record per line (JSONL)")
    return "jsonl", _jsonl(path, lenient, skipped)


def _json_array(path: Path, size: int) -> list[tuple[str, Any]]:
    if size > MAX_JSON_ARRAY_BYTES:
        raise DataError(f"{path}: a JSON array of {size / 2**20:.1f} MiB is too large to parse at once "
                        f"(limit {MAX_JSON_ARRAY_BYTES / 2**20:.0f} MiB)",
                        hint="write it as JSONL (one record per line), which is read line by line")
    text = _decode(path, path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    deep = _too_deep_at(text, MAX_JSON_DEPTH + 1)  # + 1: the array itself
    if deep is not None:
        raise DataError(f"{path} line {text.count(chr(10), 0, deep) + 1}: JSON nested more than "
                        f"{MAX_JSON_DEPTH} levels deep", hint=_DEPTH_HINT)
    try:
        arr = json.loads(text)
    except json.JSONDecodeError as e:
        # One broken record breaks a whole JSON array: there is nothing to skip to.
        raise DataError(f"{path} line {e.lineno} column {e.colno}: invalid JSON: {e.msg}",
                        hint="fix the JSON there, or use JSONL (one record per line) so --lenient can skip it"
                        ) from None
    if not arr:
        raise DataError(f"{path}: the JSON array has no records", hint="add records, or pass another file")
    return [(f"index {i}", r) for i, r in enumerate(arr)]


def _jsonl(path: Path, lenient: bool, skipped: list[Skipped]) -> Iterator[tuple[str, Any]]:
    """Records of a JSONL file, read one line at a time: memory stays bounded by MAX_LINE_BYTES."""
    with open(path, "rb") as f:
        for i in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if i == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            loc = f"line {i}"
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (more := f.readline(1 << 20)) and not more.endswith(b"\n"):
                    pass  # skip the rest of the line without holding it
                del raw
                _fail(path, loc, f"line is longer than {MAX_LINE_BYTES // 2**20} MiB", lenient, skipped,
                      hint="each JSONL line is one record; check that this is the right file, or split the record")
                continue
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _fail(path, loc, f"not UTF-8 text (byte 0x{raw[e.start]:02x})", lenient, skipped,
                      hint="save the file as UTF-8")
                continue
            too_deep = False
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                _fail(path, loc, f"invalid JSON: {e.msg} (column {e.colno})", lenient, skipped,
                      hint="each line of a JSONL file must be one complete JSON object")
                continue
            except RecursionError:  # deeper than the parser's own stack allows
                too_deep = True
            if too_deep or _depth(rec) > MAX_JSON_DEPTH:
                _fail(path, loc, f"JSON nested more than {MAX_JSON_DEPTH} levels deep", lenient, skipped,
                      hint=_DEPTH_HINT)
                continue
            yield loc, rec


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _fail(path: Path, loc: str, reason: str, lenient: bool, skipped: list[Skipped], hint: str | None = None) -> None:
    if not lenient:
        raise DataError(f"{path} {loc}: {reason}",
                        hint=hint or "fix the record, or pass --lenient to skip bad records")
    skipped.append(Skipped(loc, reason))


def read_file(path: str | Path, *, format: str | None = None, lenient: bool = False,
              max_bytes: int | None = None) -> LoadReport:
    """Read a JSON-array or JSONL dataset file into Examples (see the module docstring)."""
    path = Path(path)
    fmt = get_format(format) if format else None
    size = _check_file(path, MAX_DATASET_BYTES if max_bytes is None else max_bytes)
    skipped: list[Skipped] = []
    container, records = _records(path, lenient, skipped, size)
    examples: list[Example] = []
    detected_at = None
    for loc, rec in records:
        if not isinstance(rec, dict):
            _fail(path, loc, f"a record must be a JSON object, got {_kind(rec)}", lenient, skipped)
            continue
        if fmt is None:
            fmt = detect_format(rec)
            if fmt is None:
                _fail(path, loc, f"unknown schema with keys {sorted(rec)}", lenient, skipped,
                      hint=f"use one of: {_schemas()}; or pass --format")
                continue
            detected_at = loc
        if not all(k in rec for k in fmt.required):
            other = detect_format(rec)
            origin = f"detected from {detected_at}" if detected_at else "given by --format"
            if other is not None and other.name != fmt.name and not any(k in rec for k in fmt.required):
                reason = (f"mixed schemas: this record is {other.name!r} but the file is {fmt.name!r} ({origin})")
                hint = "use one schema per file: convert the records, or split the file"
            else:
                missing = [k for k in fmt.required if k not in rec]
                reason = f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} " \
                         f"(format {fmt.name!r}, {origin})"
                hint = None
            _fail(path, loc, reason, lenient, skipped, hint=hint)
            continue
        try:
            ex = fmt.parse(rec)
        except RecordError as e:
            _fail(path, loc, str(e), lenient, skipped)
            continue
        examples.append(Example(ex.prompt, ex.completion, ex.context,
                                {**ex.meta, "source": path.name, "line": loc}))
    if not examples:
        why = f"; all {len(skipped)} records were bad, e.g. {skipped[0].location}: {skipped[0].reason}" if skipped else ""
        raise DataError(f"{path}: no usable records{why}", hint="fix the file, or check you passed the right one")
    if skipped:
        log.warning("%s: skipped %d bad record(s): %s", path, len(skipped),
                    ", ".join(s.location for s in skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    return LoadReport(source=str(path), format=fmt.name if fmt else "?", examples=examples, skipped=skipped,
                      container=container)


def _schemas() -> str:
    return " | ".join("+".join(f.required) for f in FORMATS.values())


def write_records(path: str | Path, examples: list[Example], format: str | None = None) -> Path:
    """Write ``examples`` as JSONL in ``format``, atomically (no half-written file on error).

    ``format=None`` picks ``qa``, or ``text`` when some example trains on its whole text
    (empty prompt), which only the text schema can hold.
    """
    from quantgrid.utils import atomic_write_text

    if format is None:
        format = "text" if any(not ex.prompt for ex in examples) else "qa"
    dump = get_format(format).dump
    text = "".join(json.dumps(dump(ex), ensure_ascii=False) + "\n" for ex in examples)
    return atomic_write_text(path, text)
