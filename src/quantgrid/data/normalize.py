"""Replace live numbers with placeholders, as the BullishAI dataset guide asks, and dedup.

A model should learn *how* to answer "What is AAPL trading at?" - with the price from
its context - not memorize a price that was right on one day. So prices, changes,
percentages, dates and timestamps become ``<PRICE>``, ``<CHANGE>``, ``<PERCENT>``,
``<DATE>``, ``<TIMESTAMP>``, ``<AMOUNT>`` (money with a magnitude, e.g. $2.5B) and
``<VOLUME>`` (share counts). ``<NUMBER>`` (any other number) is opt-in. Every
replacement is recorded, so the change can be reviewed and audited.

One regex with a named group per kind, in priority order: at each position the first
kind that matches wins (a timestamp before the date inside it, "$2.5B" as an amount
before "$2.5" as a price, "up 3%" as a change before "3%" as a percentage).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantgrid.data.types import Example
from quantgrid.errors import DataError

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_NUM = r"\d[\d,]*(?:\.\d+)?"
_ZONES = r"UTC|GMT|ET|EST|EDT|CT|CST|CDT|PT|PST|PDT"
_TZ = rf"(?:\s?(?:{_ZONES}))?"
_VERBS = (r"up|down|rose|fell|gained|lost|dropped|jumped|climbed|declined|increased|decreased|slipped|surged|"
          r"rallied|sank|added|shed|plunged|soared|tumbled|advanced|retreated")

# (kind, pattern). A pattern may have a group named ``v``: then only that part is replaced
# (``up 3%`` -> ``up <CHANGE>``).
PATTERNS: list[tuple[str, str]] = [
    ("TIMESTAMP", r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2}|\s?(?:" + _ZONES + r"))?"),
    ("TIMESTAMP", r"\b1[4-9]\d{8}(?:\d{3})?\b"),  # Unix epoch seconds / milliseconds (2014-2033)
    ("TIMESTAMP", r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?" + _TZ + r"\b"),
    ("DATE", r"\b\d{4}-\d{2}-\d{2}\b"),
    ("DATE", r"\b\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})\b"),
    ("DATE", rf"\b{_MONTH}\s\d{{1,2}}(?:st|nd|rd|th)?,?\s\d{{4}}\b"),
    ("DATE", rf"\b\d{{1,2}}\s{_MONTH}\s\d{{4}}\b"),
    ("DATE", rf"\b{_MONTH}\s(?:\d{{1,2}}(?:st|nd|rd|th)?|\d{{4}})\b"),
    ("CHANGE", rf"\b(?i:{_VERBS})\s+(?:by\s+)?(?P<v>[$]?{_NUM}(?:\s?%|\s+percent\b)?)"),
    ("CHANGE", rf"(?<![\w.)])[+\-\u2212]\s?\$?{_NUM}(?:\s?%)?"),
    ("PERCENT", rf"\b{_NUM}\s?(?:%|percent\b)"),
    ("AMOUNT", rf"\$\s?{_NUM}\s?(?:[KMBT]\b|bn\b|mn\b|thousand\b|million\b|billion\b|trillion\b)"),
    ("PRICE", rf"\$\s?{_NUM}"),
    ("PRICE", rf"\b{_NUM}\s?(?:USD|EUR|GBP|dollars)\b|\b(?:USD|EUR|GBP)\s?{_NUM}"),
    ("VOLUME", rf"\b{_NUM}\s?[KMB]?(?=\s(?:shares|contracts|units traded)\b)"),
    ("NUMBER", rf"(?<![\w<]){_NUM}\b"),
]
KINDS: tuple[str, ...] = tuple(dict.fromkeys(k for k, _ in PATTERNS))
DEFAULT_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != "NUMBER")
# Meta fields that are ours, not user text.
_META_SKIP = {"source", "line", "topic", "template", "unit", "answer_value", "tickers"}


@dataclass(frozen=True)
class Change:
    """One replacement: where (record, field, offset in the original text), what and by what."""

    record: str
    field: str
    offset: int
    original: str
    placeholder: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _compile(kinds: Iterable[str]) -> re.Pattern[str]:
    kinds = set(kinds)
    unknown = kinds - set(KINDS)
    if unknown:
        raise DataError(f"unknown placeholder kind(s): {', '.join(sorted(unknown))}",
                        hint=f"choose from: {', '.join(KINDS)}")
    parts = []
    for i, (kind, pattern) in enumerate(PATTERNS):
        if kind in kinds:
            # Named groups must be unique: rename the inner ``v`` group per pattern.
            parts.append(f"(?P<k{i}_{kind}>{pattern.replace('(?P<v>', f'(?P<v{i}>')})")
    return re.compile("|".join(parts))


def normalize_text(text: str, kinds: Sequence[str] = DEFAULT_KINDS,
                   _pattern: re.Pattern[str] | None = None) -> tuple[str, list[tuple[int, str, str]]]:
    """(new text, [(offset, original, placeholder)]) with every match of ``kinds`` replaced."""
    pattern = _pattern or _compile(kinds)
    changes: list[tuple[int, str, str]] = []

    def sub(m: re.Match[str]) -> str:
        name = m.lastgroup or ""
        i, kind = name[1:].split("_", 1)
        placeholder = f"<{kind}>"
        inner = m.groupdict().get(f"v{i}")
        if inner is not None:  # replace only the number after "up"/"fell by"
            start = m.start(f"v{i}")
            changes.append((start, inner, placeholder))
            return text[m.start():start] + placeholder + text[m.end(f"v{i}"):m.end()]
        changes.append((m.start(), m.group(), placeholder))
        return placeholder

    return pattern.sub(sub, text), changes


@dataclass
class NormalizeResult:
    examples: list[Example]
    changes: list[Change] = field(default_factory=list)
    duplicates_removed: int = 0
    changed_examples: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.placeholder] = out.get(c.placeholder, 0) + 1
        return dict(sorted(out.items()))


def _walk(value: Any, record: str, path: str, pattern: re.Pattern[str], changes: list[Change]) -> Any:
    if isinstance(value, str):
        new, found = normalize_text(value, _pattern=pattern)
        changes.extend(Change(record, path, off, orig, ph) for off, orig, ph in found)
        return new
    if isinstance(value, list):
        return [_walk(v, record, f"{path}[{i}]", pattern, changes) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, record, f"{path}.{k}", pattern, changes) for k, v in value.items()}
    return value


def normalize_examples(examples: Sequence[Example], kinds: Sequence[str] = DEFAULT_KINDS,
                       dedup: bool = True) -> NormalizeResult:
    """Placeholders in prompt, context, completion and text meta fields (rationale, citations...).

    ``dedup`` drops examples that became exact duplicates of an earlier one (prices
    that differed only in their numbers are the same example once normalized).
    """
    from quantgrid.data import example_hash

    pattern = _compile(kinds)
    result = NormalizeResult(examples=[])
    seen: set[str] = set()
    for i, ex in enumerate(examples):
        record = str(ex.meta.get("line") or f"record {i}")
        changes: list[Change] = []
        prompt = _walk(ex.prompt, record, "prompt", pattern, changes)
        completion = _walk(ex.completion, record, "completion", pattern, changes)
        context = _walk(ex.context, record, "context", pattern, changes) if ex.context else ex.context
        meta = {k: (v if k in _META_SKIP else _walk(v, record, k, pattern, changes)) for k, v in ex.meta.items()}
        if completion != ex.completion:
            meta.pop("answer_value", None)  # the number it named is gone from the answer
        new = Example(prompt, completion, context, meta)
        if dedup:
            h = example_hash(new)
            if h in seen:
                result.duplicates_removed += 1
                continue
            seen.add(h)
        result.changes += changes
        result.changed_examples += bool(changes)
        result.examples.append(new)
    return result
