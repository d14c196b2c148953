"""Generation metrics, in a registry: score generated answers against benchmark items.

A metric is a function ``fn(items, answers, **options) -> MetricResult | float | None``
where ``items`` are the benchmark ``Example``s (with ``meta``), ``answers`` the generated
texts in the same order, and ``options`` whatever the caller passes (``rel_tol=``,
``patterns=``, ``prices=``...; a metric receives only the options it names, unless it
takes ``**kwargs``). Registering one is one line::

    @register_metric("alpha_backtest", "Sharpe of the generated alpha on the price panel")
    def alpha_backtest(items, answers, *, prices=None): ...

A metric that does not fit the data (factuality on items with no context, code compile
rate on a benchmark with no code) reports ``score=None`` -- shown as "n/a" -- with a note
saying why, never an exception. Scores are fractions in [0, 1] except BLEU, which is on
sacrebleu's 0-100 scale.
"""

from __future__ import annotations

import inspect
import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantgrid.data.types import Example
from quantgrid.errors import ConfigError, DataError


@dataclass
class MetricResult:
    """A benchmark-level score plus the per-item scores behind it.

    ``score`` is None when the metric does not apply ("n/a"); ``per_item[i]`` is None for
    an item the metric skipped. ``n_scored`` counts the items that were scored.
    """

    name: str
    score: float | None
    per_item: list[float | None] = field(default_factory=list)
    note: str | None = None
    higher_is_better: bool = True

    @property
    def n_scored(self) -> int:
        return sum(1 for x in self.per_item if x is not None)

    @property
    def display(self) -> str:
        return "n/a" if self.score is None else f"{self.score:.4g}"

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "n_scored": self.n_scored, "note": self.note,
                "higher_is_better": self.higher_is_better}


MetricFn = Callable[..., "MetricResult | float | None"]


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    fn: MetricFn
    higher_is_better: bool = True


METRICS: dict[str, Metric] = {}


def register_metric(name: str, description: str = "", *, higher_is_better: bool = True
                    ) -> Callable[[MetricFn], MetricFn]:
    """Decorator: add ``fn`` to the registry under ``name`` (a later registration replaces it)."""
    def deco(fn: MetricFn) -> MetricFn:
        METRICS[name] = Metric(name, description or (fn.__doc__ or "").strip().split("\n")[0], fn,
                               higher_is_better)
        return fn
    return deco


# Packages that register metrics of their own when imported (formulaic alphas add
# ``alpha_backtest``). Imported on first use of the registry, not at import time, so
# this module stays light and there is no import cycle.
PLUGIN_MODULES = ("quantgrid.eval.alpha",)
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib

    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # an optional part that is not installed
            if e.name is None or not mod.startswith(e.name):
                raise


def all_metrics() -> dict[str, Metric]:
    _load_plugins()
    return dict(METRICS)


def metric_names() -> list[str]:
    return list(all_metrics())


def get_metric(name: str) -> Metric:
    _load_plugins()
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}",
                          hint=f"choose from: {', '.join(METRICS)} (or `loss`)")
    return METRICS[name]


def compute_metric(name: str, items: Sequence[Example], answers: Sequence[str], **options: Any) -> MetricResult:
    """Run metric ``name``, passing it only the options its signature accepts."""
    metric = get_metric(name)
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answers")
    params = inspect.signature(metric.fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    out = metric.fn(items, answers, **options)
    if not isinstance(out, MetricResult):
        out = MetricResult(name, None if out is None else float(out))
    out.name = name
    out.higher_is_better = metric.higher_is_better
    return out


def compute_metrics(names: Sequence[str], items: Sequence[Example], answers: Sequence[str],
                    **options: Any) -> dict[str, MetricResult]:
    return {n: compute_metric(n, items, answers, **options) for n in names}


def _mean_result(name: str, per_item: list[float | None], na_note: str) -> MetricResult:
    scored = [x for x in per_item if x is not None]
    if not scored:
        return MetricResult(name, None, per_item, note=na_note)
    return MetricResult(name, sum(scored) / len(scored), per_item)


# ---------------------------------------------------------------- text helpers

_NUMBER = re.compile(r"(?<![\w.])[-+−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|(?<![\w.])[-+−]?\.\d+%?")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(s: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    s = s.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def parse_number(token: str) -> float:
    """'$1,234.5' -> 1234.5, '-3%' -> -3.0, '−2' (unicode minus) -> -2.0."""
    return float(token.replace("−", "-").replace("$", "").replace(",", "").rstrip("%"))


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text``, in order (thousands separators, $, % understood)."""
    return [parse_number(m.group()) for m in _NUMBER.finditer(text or "")]


def _is_number_text(s: str) -> bool:
    m = _NUMBER.fullmatch(s.strip().rstrip("."))
    return m is not None


def _close(a: float, b: float, rel_tol: float) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


# ---------------------------------------------------------------- metrics


@register_metric("exact_match", "normalized text equal; numeric answers within a relative tolerance")
def exact_match(items: Sequence[Example], answers: Sequence[str], *, rel_tol: float = 1e-2) -> MetricResult:
    """Exact match. An item is numeric when ``meta["answer_value"]`` is set or its reference
    is a bare number; then the LAST number in the answer (the GSM8K convention: the
    conclusion comes last) must be within ``rel_tol`` of it. Otherwise the normalized texts
    must be equal."""
    per: list[float | None] = []
    for ex, ans in zip(items, answers, strict=True):
        target = ex.meta.get("answer_value")
        if target is None and _is_number_text(ex.completion):
            target = parse_number(ex.completion.strip().rstrip("."))
        if target is not None:
            nums = numbers_in(ans)
            per.append(float(bool(nums) and _close(nums[-1], float(target), rel_tol)))
        else:
            per.append(float(normalize_text(ans) == normalize_text(ex.completion)))
    return _mean_result("exact_match", per, "empty benchmark")


def _rouge_tokens(s: str) -> list[str]:
    # rouge_score's default tokenizer: lower case, non-alphanumerics become spaces
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).split()


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens, harmonic mean of P and R."""
    p, r = _rouge_tokens(prediction), _rouge_tokens(reference)
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


@register_metric("rouge_l", "ROUGE-L F1 against the reference answer (mean over items)")
def rouge_l(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    per: list[float | None] = [rouge_l_f1(a, ex.completion) for ex, a in zip(items, answers, strict=True)]
    return _mean_result("rouge_l", per, "empty benchmark")


@register_metric("bleu", "corpus BLEU against the reference answers (sacrebleu, 0-100)")
def bleu(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    """Corpus BLEU computed by sacrebleu itself (13a tokenization), so scores are comparable
    with every paper that reports sacreBLEU. Per item: sentence BLEU, for the worst-example
    listing."""
    import sacrebleu

    if not items:
        return MetricResult("bleu", None, [], note="empty benchmark")
    refs = [ex.completion for ex in items]
    score = sacrebleu.corpus_bleu(list(answers), [refs]).score
    per: list[float | None] = [sacrebleu.sentence_bleu(a, [r]).score for a, r in zip(answers, refs, strict=True)]
    return MetricResult("bleu", score, per)


@register_metric("factuality", "share of answers whose every number appears in the item's context")
def factuality(items: Sequence[Example], answers: Sequence[str], *, rel_tol: float = 1e-9) -> MetricResult:
    """BullishAI's check: a number the model writes must be grounded in the context it was
    given. Items without a context are skipped; with none at all the metric is n/a. An
    answer with no numbers makes no numeric claim and counts as factual."""
    per: list[float | None] = []
    for ex, ans in zip(items, answers, strict=True):
        if not ex.context:
            per.append(None)
            continue
        grounded = numbers_in(ex.context)
        per.append(float(all(any(_close(n, g, rel_tol) for g in grounded) for n in numbers_in(ans))))
    return _mean_result("factuality", per, "no benchmark item has a context to check numbers against")


_CITATION = re.compile(
    r"\[(?:\d+|[^\]\n]{0,40}(?:source|ref|\d{4})[^\]\n]{0,40})\]"  # [1], [source: X], [10-K 2023]
    r"|\((?:source|sources|ref|see)\s*:[^)\n]+\)"  # (Source: SEC filing)
    r"|\b(?:source|sources)\s*:"  # Source: ...
    r"|\baccording to\b|\bas reported (?:by|in)\b|\bcited (?:from|in)\b",
    re.IGNORECASE)
_RISK = re.compile(
    r"not (?:financial|investment) advice|past performance|\bdisclaimer\b|do your own research"
    r"|consult (?:a|an|your) (?:licensed |qualified |independent )?(?:financial )?(?:advis[eo]r|professional|planner)"
    r"|\b(?:investing|investments?|trading|this) (?:involves?|carries|carry) (?:\w+ )?risks?\b"
    r"|\brisk of (?:loss|losing)\b|\bmay lose\b|\bcould lose\b",
    re.IGNORECASE)


def has_citation(text: str) -> bool:
    return _CITATION.search(text or "") is not None


def has_risk_note(text: str) -> bool:
    return _RISK.search(text or "") is not None


@register_metric("citation_rate", "share of answers that cite a source, over items whose reference cites one")
def citation_rate(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    """An item expects a citation when its ``meta["citations"]`` is non-empty or its reference
    answer cites (``[1]``, ``(Source: ...)``, "according to ..."). n/a when none does."""
    per: list[float | None] = []
    for ex, ans in zip(items, answers, strict=True):
        expects = bool(ex.meta.get("citations")) or has_citation(ex.completion)
        per.append(float(has_citation(ans)) if expects else None)
    return _mean_result("citation_rate", per, "no benchmark item expects a citation")


@register_metric("risk_note_rate", "share of answers with a risk note, over items that expect one")
def risk_note_rate(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    """An item expects a risk note when ``meta["risk_note"]`` is set or its reference has one
    ("not financial advice", "past performance...", "consult a financial adviser", ...)."""
    per: list[float | None] = []
    for ex, ans in zip(items, answers, strict=True):
        expects = bool(ex.meta.get("risk_note")) or has_risk_note(ex.completion)
        per.append(float(has_risk_note(ans)) if expects else None)
    return _mean_result("risk_note_rate", per, "no benchmark item expects a risk note")


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_LANGS = ("python", "py", "python3")
_PY_HINT = re.compile(r"^\s*(?:def |class |import |from \w+ import )", re.MULTILINE)


def python_blocks(text: str, *, bare: bool = False) -> list[str]:
    """Python code blocks of ``text``: fenced ```python (or untagged) blocks; with ``bare``,
    the whole text when it has no fence but reads like Python."""
    blocks = [code for lang, code in _FENCE.findall(text or "") if lang.lower() in (*_PY_LANGS, "")]
    if not blocks and bare and "```" not in (text or "") and _PY_HINT.search(text or ""):
        blocks = [text]
    return blocks


def compiles(code: str) -> bool:
    """Does ``code`` parse as Python? Uses ``compile()`` only: the code is never executed."""
    try:
        compile(code, "<answer>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):  # ValueError: source with null bytes
        return False
    return True


@register_metric("code_compile_rate", "share of answers whose Python code blocks compile (never executed)")
def code_compile_rate(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    """Over items whose reference holds Python code (a fenced block, or the whole reference
    when ``meta["language"]`` is python): 1 when the answer has code and every block
    compiles, else 0. n/a on a benchmark without Python code."""
    per: list[float | None] = []
    for ex, ans in zip(items, answers, strict=True):
        is_py = str(ex.meta.get("language", "")).lower() in _PY_LANGS
        if not python_blocks(ex.completion, bare=is_py):
            per.append(None)
            continue
        blocks = python_blocks(ans, bare=True)
        per.append(float(bool(blocks) and all(compiles(b) for b in blocks)))
    return _mean_result("code_compile_rate", per, "no benchmark item has Python code in its reference")


# The @qi/base conventions of seed 004: Result<T> error handling, not throw / null.
PATTERN_PRESETS: dict[str, dict[str, list[str]]] = {
    "qi": {
        "must": [r"""from\s+['"]@qi/(?:base|core)['"]""", r"\bResult<", r"\b(?:success|failure|match)\("],
        "must_not": [r"\bthrow\s+new\s+Error\b", r"\breturn\s+null\b"],
    },
}


def _pattern_spec(spec: Any, where: str) -> tuple[list[str], list[str]]:
    if spec is None:
        return [], []
    if isinstance(spec, str):
        if spec not in PATTERN_PRESETS:
            raise ConfigError(f"{where}: unknown pattern preset {spec!r}",
                              hint=f"use one of {', '.join(PATTERN_PRESETS)} or a {{'must': [...], 'must_not': [...]}} mapping")
        spec = PATTERN_PRESETS[spec]
    if isinstance(spec, list):  # a bare list: regexes that must appear
        spec = {"must": spec}
    if not isinstance(spec, dict):
        raise DataError(f"{where}: patterns must be a mapping with 'must' / 'must_not' lists, got {type(spec).__name__}")
    must, must_not = list(spec.get("must", [])), list(spec.get("must_not", []))
    for rx in must + must_not:
        try:
            re.compile(rx)
        except (re.error, TypeError) as e:
            raise DataError(f"{where}: bad regular expression {rx!r}: {e}",
                            hint="fix the pattern (Python `re` syntax)") from None
    return must, must_not


def complies(text: str, must: Sequence[str], must_not: Sequence[str]) -> bool:
    return all(re.search(rx, text or "") for rx in must) and not any(re.search(rx, text or "") for rx in must_not)


@register_metric("pattern_compliance", "share of answers matching every required regex and no forbidden one")
def pattern_compliance(items: Sequence[Example], answers: Sequence[str], *, patterns: Any = None) -> MetricResult:
    """``patterns`` (the benchmark's: a preset name like "qi", a list of required regexes,
    or ``{"must": [...], "must_not": [...]}``) applies to every item; an item's own
    ``meta["patterns"]`` (same forms) is added to it. Items with no patterns are skipped."""
    bench_must, bench_not = _pattern_spec(patterns, "--patterns")
    per: list[float | None] = []
    for i, (ex, ans) in enumerate(zip(items, answers, strict=True)):
        where = f"{ex.meta.get('source', 'benchmark')} item {ex.meta.get('line', i + 1)}"
        own_must, own_not = _pattern_spec(ex.meta.get("patterns"), where)
        must, must_not = bench_must + own_must, bench_not + own_not
        per.append(float(complies(ans, must, must_not)) if must or must_not else None)
    return _mean_result("pattern_compliance", per, "no patterns given for the benchmark or its items")


def answer_quality(answers: Sequence[str]) -> dict[str, float]:
    """Shares of empty answers, degenerate (repetitive) answers and duplicated answers --
    the signs of low-quality data or a collapsed adapter, for the report's diagnoses."""
    n = len(answers) or 1
    empty = sum(1 for a in answers if not a.strip())
    repetitive = sum(1 for a in answers if a.strip() and _repetitive(a))
    nonempty = [a.strip() for a in answers if a.strip()]
    duplicated = len(nonempty) - len(set(nonempty))
    return {"empty": empty / n, "repetitive": repetitive / n, "duplicated": duplicated / n}


# A unit of 1-8 characters (no digits: 1000000 is a number, not a stutter), 4+ times in a row.
_REPEAT = re.compile(r"((?:(?!\d).){1,8}?)\1{3,}", re.DOTALL)


def _repetitive(text: str, n: int = 3) -> bool:
    """Degenerate output: half the text is one short unit repeated ("......", "the the the"),
    or half the word trigrams are repeats."""
    text = text.strip()
    if sum(len(m.group()) for m in _REPEAT.finditer(text)) >= len(text) / 2:
        return True
    words = text.split()
    grams = [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]
    return len(grams) >= 4 and len(set(grams)) <= len(grams) / 2
