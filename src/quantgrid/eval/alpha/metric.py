"""The alpha and strategy metrics, registered in :mod:`quantgrid.eval.metrics` when this package loads.

- ``alpha_backtest``: share of alpha items whose generated alpha compiles, runs on the
  price panel and gives a non-degenerate signal (the plan's "backtest success", target
  > 50%). Its results.json block also holds compile rate, mean Sharpe, turnover and IC.
- ``alpha_compile_rate``: share of generated alphas that parse and check (target > 80%).
- ``alpha_sharpe``: mean annualized long-short Sharpe of the generated alphas that run.
- ``strategy_structure``: for QuantConnect strategy items, the share of the required
  structure (a QCAlgorithm class, Initialize, OnData) present in the answer, by ``ast``.

An *alpha item* is one whose ``meta["task"]`` is ``formulaic_alpha``, or, in a user's
unmarked benchmark, whose reference answer is itself a compilable alpha over price
data. Other items are skipped, so on a benchmark without alphas these metrics are "n/a".
The panel is ``prices=`` (a CSV/Parquet path or a :class:`Panel`), else the seeded
synthetic panel, and the report says which.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.data.types import Example
from quantgrid.errors import EvalError
from quantgrid.eval.metrics import PATTERN_PRESETS, MetricResult, register_metric
from quantgrid.eval.strategy import REQUIRED, STRATEGY_PATTERNS, check_strategy, extract_code

from .backtest import extract_expression, score_alphas
from .expression import compile_alpha
from .panel import Panel, load_panel, synthetic_panel

ALPHA_TASK = "formulaic_alpha"
STRATEGY_TASK = "qc_strategy"

PATTERN_PRESETS.setdefault("quantconnect", STRATEGY_PATTERNS)  # pattern_compliance --patterns quantconnect


@dataclass
class DetailedResult(MetricResult):
    """A MetricResult that also carries the breakdown (compile rate, Sharpe...) into results.json."""

    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.details}


def is_alpha_item(ex: Example) -> bool:
    """Marked ``task: formulaic_alpha``, or unmarked with a reference that compiles to an alpha over prices."""
    if ex.meta.get("task") == ALPHA_TASK:
        return True
    if ex.meta.get("task"):
        return False
    try:
        return bool(compile_alpha(extract_expression(ex.completion)).fields)
    except EvalError:
        return False


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Panel:
    return load_panel(path)


@functools.cache
def default_panel() -> Panel:
    """The panel used when no prices are given: 500 business days x 50 assets, seed 0."""
    return synthetic_panel(n_dates=500, n_assets=50, seed=0)


def resolve_panel(prices: str | Path | Panel | None) -> Panel:
    """A Panel as is, a CSV/Parquet path (loaded once per file version), or None: the synthetic default."""
    if prices is None:
        return default_panel()
    if isinstance(prices, Panel):
        return prices
    path = Path(prices)
    return _load(str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0)


class _LastScore:
    """alpha_backtest and alpha_sharpe score the same answers on the same panel: do it once (one entry, no leak)."""

    key: tuple | None = None
    report: dict | None = None

    @classmethod
    def get(cls, answers: tuple[str, ...], panel: Panel) -> dict:
        if cls.key is None or cls.key[0] is not panel or cls.key[1] != answers:
            cls.key, cls.report = (panel, answers), score_alphas(list(answers), panel)
        return cls.report


def _alpha_report(items: Sequence[Example], answers: Sequence[str], prices) -> tuple[list[int], dict | None]:
    idx = [i for i, ex in enumerate(items) if is_alpha_item(ex)]
    if not idx:
        return idx, None
    return idx, _LastScore.get(tuple(answers[i] for i in idx), resolve_panel(prices))


_NA = "no benchmark item is a formulaic alpha (meta task=formulaic_alpha, or a reference that is an alpha)"


def _details(rep: dict) -> dict[str, Any]:
    keys = ("compile_rate", "backtest_success", "sharpe", "turnover", "ic", "panel", "method")
    return {"alpha": {k: rep[k] for k in keys} | {"n_items": rep["n"]}}


def _per_item(n: int, idx: list[int], values: list) -> list[float | None]:
    per: list[float | None] = [None] * n
    for i, v in zip(idx, values, strict=True):
        per[i] = v
    return per


@register_metric("alpha_backtest", "share of generated alphas that compile and backtest to a non-degenerate signal")
def alpha_backtest(items: Sequence[Example], answers: Sequence[str], *, prices=None) -> MetricResult:
    idx, rep = _alpha_report(items, answers, prices)
    if rep is None:
        return MetricResult("alpha_backtest", None, [None] * len(items), note=_NA)
    per = _per_item(len(items), idx, [float(it["backtested"]) for it in rep["items"]])
    return DetailedResult("alpha_backtest", rep["backtest_success"], per, details=_details(rep))


@register_metric("alpha_compile_rate", "share of generated alphas that parse and check")
def alpha_compile_rate(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    idx = [i for i, ex in enumerate(items) if is_alpha_item(ex)]
    if not idx:
        return MetricResult("alpha_compile_rate", None, [None] * len(items), note=_NA)
    ok = []
    for i in idx:
        try:
            compile_alpha(extract_expression(answers[i]))
            ok.append(1.0)
        except EvalError:
            ok.append(0.0)
    return MetricResult("alpha_compile_rate", sum(ok) / len(ok), _per_item(len(items), idx, ok))


@register_metric("alpha_sharpe", "mean annualized long-short Sharpe of the generated alphas that run")
def alpha_sharpe(items: Sequence[Example], answers: Sequence[str], *, prices=None) -> MetricResult:
    idx, rep = _alpha_report(items, answers, prices)
    if rep is None:
        return MetricResult("alpha_sharpe", None, [None] * len(items), note=_NA)
    per = _per_item(len(items), idx, [it.get("sharpe") for it in rep["items"]])
    note = None if rep["sharpe"] is not None else "no generated alpha ran, so there is no Sharpe"
    return DetailedResult("alpha_sharpe", rep["sharpe"], per, note=note, details=_details(rep))


def is_strategy_item(ex: Example) -> bool:
    if ex.meta.get("task") == STRATEGY_TASK:
        return True
    return "QCAlgorithm" in ex.completion and check_strategy(ex.completion).checks.get("algorithm_class", False)


@register_metric("strategy_structure", "QuantConnect strategies: share of QCAlgorithm/Initialize/OnData present (ast)")
def strategy_structure(items: Sequence[Example], answers: Sequence[str]) -> MetricResult:
    idx = [i for i, ex in enumerate(items) if is_strategy_item(ex)]
    if not idx:
        return MetricResult("strategy_structure", None, [None] * len(items),
                            note="no benchmark item is a QuantConnect strategy (a QCAlgorithm class in the reference)")
    checks = [check_strategy(answers[i]) for i in idx]
    per = _per_item(len(items), idx, [c.score for c in checks])
    details = {"strategy": {
        "compile_rate": sum(c.parses for c in checks) / len(checks),
        "structure_rate": sum(all(c.checks.get(k, False) for k in REQUIRED) for c in checks) / len(checks),
        "flagged": sum(bool(c.warnings) for c in checks),
        "answers_with_code": sum(bool(extract_code(answers[i]).strip()) for i in idx),
    }}
    return DetailedResult("strategy_structure", sum(c.score for c in checks) / len(checks), per, details=details)
