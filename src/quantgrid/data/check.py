"""``quantgrid data check``: what a dataset holds and what will go wrong when training on it.

Counts, the detected format, length statistics (tokens when a tokenizer is given,
characters otherwise) and warnings: too few examples, exact and near duplicates,
examples the recipe's ``max_seq_length`` will truncate, records skipped by
``--lenient``, and BullishAI records that need context but carry none.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from quantgrid.data.formats import LoadReport
from quantgrid.data.prompts import render
from quantgrid.data.split import duplicate_groups

MIN_RECOMMENDED = 500
# Near-duplicate search is exact (all pairs via an n-gram index); past this size it is
# skipped rather than making `data check` slow.
MAX_NEAR_DUP_CHECK = 50_000
CHARS_PER_TOKEN = 4.0  # rough English/BPE average, used only when no tokenizer is given


@dataclass
class LengthStats:
    min: float
    mean: float
    median: float
    p95: float
    max: float

    @classmethod
    def of(cls, xs: list[int]) -> LengthStats:
        s = sorted(xs)
        p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
        return cls(s[0], round(statistics.fmean(s), 1), statistics.median(s), p95, s[-1])


@dataclass
class CheckReport:
    source: str
    format: str
    n_examples: int
    n_skipped: int
    n_with_context: int
    unit: str  # "tokens" or "chars"
    template: str
    max_seq_length: int
    lengths: dict[str, LengthStats]
    exact_duplicates: int
    near_duplicates: int | None  # None when the set was too large to check
    n_truncated: int
    truncation_estimated: bool
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_examples(report: LoadReport, *, tokenizer: Any = None, template: str = "qa",
                   max_seq_length: int = 1024, system_prompt: str | None = None) -> CheckReport:
    examples = report.examples
    rendered = [render(ex, template, tokenizer, system_prompt) for ex in examples]
    if tokenizer is not None:
        # One batched call per field: fast tokenizers do this in Rust.
        # As ml.tokenize.encode does: the chat template writes its own <s>, other prompts get it from the tokenizer.
        add_special = template != "chat"
        p_len = [len(x) for x in tokenizer([p for p, _ in rendered], add_special_tokens=add_special)["input_ids"]]
        c_len = [len(x) + 1 for x in tokenizer([c for _, c in rendered], add_special_tokens=False)["input_ids"]]
        unit = "tokens"
        totals = [p + c for p, c in zip(p_len, c_len, strict=True)]
        est = False
    else:
        p_len = [len(p) for p, _ in rendered]
        c_len = [len(c) for _, c in rendered]
        unit = "chars"
        totals = [int((p + c) / CHARS_PER_TOKEN) + 2 for p, c in zip(p_len, c_len, strict=True)]
        est = True
    lengths = {"prompt": LengthStats.of(p_len), "completion": LengthStats.of(c_len),
               "total": LengthStats.of([p + c for p, c in zip(p_len, c_len, strict=True)])}
    n_trunc = sum(t > max_seq_length for t in totals)

    near: int | None
    if len(examples) <= MAX_NEAR_DUP_CHECK:
        _, exact, near = duplicate_groups(examples)
    else:
        from quantgrid.data import example_hash

        exact = len(examples) - len({example_hash(e) for e in examples})
        near = None

    warnings = []
    n = len(examples)
    if n < MIN_RECOMMENDED:
        warnings.append(f"only {n} examples; at least {MIN_RECOMMENDED} are recommended for an adapter that helps")
    if exact:
        warnings.append(f"{exact} exact duplicate(s): they add no information and overweight those items")
    if near:
        warnings.append(f"{near} near-duplicate pair(s) (8-gram overlap >= 50%): keep them out of any benchmark "
                        "(`quantgrid data split` does)")
    if near is None:
        warnings.append(f"near duplicates not checked: more than {MAX_NEAR_DUP_CHECK} examples")
    if n_trunc:
        how = " (an estimate at ~4 characters per token; pass --tokenizer for exact counts)" if est else ""
        warnings.append(f"{n_trunc} example(s) longer than max_seq_length={max_seq_length} tokens will be truncated{how}")
    if report.skipped:
        warnings.append(f"{len(report.skipped)} bad record(s) skipped (--lenient): "
                        + ", ".join(s.location for s in report.skipped[:10]) + (" ..." if len(report.skipped) > 10 else ""))
    no_ctx = sum(1 for e in examples if e.meta.get("context_required") is True and not e.context)
    if no_ctx:
        warnings.append(f"{no_ctx} example(s) have context_required: true but no context: the model cannot see the "
                        "live data such answers depend on")
    empty_prompt = sum(1 for e in examples if not e.prompt)
    if empty_prompt and empty_prompt < n:
        warnings.append(f"{empty_prompt} text record(s) have no answer marker and train on the whole text")
    return CheckReport(
        source=report.source, format=report.format, n_examples=n, n_skipped=len(report.skipped),
        n_with_context=sum(bool(e.context) for e in examples), unit=unit, template=template,
        max_seq_length=max_seq_length, lengths=lengths, exact_duplicates=exact, near_duplicates=near,
        n_truncated=n_trunc, truncation_estimated=est,
        skipped=[{"location": s.location, "reason": s.reason} for s in report.skipped], warnings=warnings)
