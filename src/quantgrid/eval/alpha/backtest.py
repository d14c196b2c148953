"""Backtest an alpha signal and score a batch of generated alphas.

Timing (no lookahead): the signal at row t uses data up to the close of t. The
portfolio formed from it at that close earns the *next* day's close-to-close return
``r[t+1]`` (``Panel.forward_returns()[t]``). Nothing else looks forward.

Portfolios are dollar-neutral and gross-1 each day:

- ``rank`` (default): weights proportional to the demeaned cross-sectional rank;
- ``quantile``: equal-weight long the top fifth, short the bottom fifth.

Metrics: annualized Sharpe of the daily long-short P&L (``sqrt(252) * mean / std``,
no costs), one-way turnover (``0.5 * sum |w_t - w_{t-1}|``, 1.0 = the whole book
changes), and IC (Spearman rank correlation of the signal with next-day returns,
averaged over days).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from quantgrid.errors import EvalError

from .expression import check_panel, compile_alpha
from .grammar import parse
from .operators import rank
from .panel import Panel

TRADING_DAYS = 252
MIN_DAYS = 20  # fewer tradable days than this is not a backtest
# A generated alpha is a usable signal ("backtest success") only if its cross-section is
# finite and not constant on more than this share of the dates after its lookback.
MIN_COVERAGE = 0.5
METHODS = ("rank", "quantile")


@dataclass
class BacktestResult:
    sharpe: float
    turnover: float
    ic: float
    days: int  # days with a tradable (non-degenerate) signal and a known next-day return
    annual_return: float

    def to_dict(self) -> dict:
        return asdict(self)


def _row_mean(a: np.ndarray) -> np.ndarray:
    """Mean of each row over its known values (NaN for an all-NaN row, without numpy's warning)."""
    n = (~np.isnan(a)).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(a, axis=1, keepdims=True) / n


def weights(signal: np.ndarray, method: str = "rank", quantile: float = 0.2) -> np.ndarray:
    """Dollar-neutral, gross-1 weights per row; a row with < 2 distinct values gets no position."""
    r = rank(signal)
    if method == "rank":
        w = r - _row_mean(r)
    elif method == "quantile":
        w = np.where(r > 1 - quantile, 1.0, 0.0) - np.where(r <= quantile, 1.0, 0.0)
        w = np.where(np.isnan(r), np.nan, w)
        # equal weight within each leg so the book stays dollar-neutral when the legs differ in size
        longs = np.nansum(w > 0, axis=1, keepdims=True)
        shorts = np.nansum(w < 0, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(w > 0, 1.0 / longs, np.where(w < 0, -1.0 / shorts, w))
        w[((longs == 0) | (shorts == 0)).ravel()] = 0.0
    else:
        raise EvalError(f"unknown portfolio method {method!r}", hint="use 'rank' or 'quantile'")
    w = np.nan_to_num(w, nan=0.0)
    gross = np.abs(w).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(gross > 1e-12, w / gross, 0.0)
    return w


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row Spearman correlation over the assets where both are known (NaN with < 3 pairs)."""
    both = ~np.isnan(x) & ~np.isnan(y)
    rx = rank(np.where(both, x, np.nan))
    ry = rank(np.where(both, y, np.nan))
    n = both.sum(axis=1)
    rx = rx - _row_mean(rx)
    ry = ry - _row_mean(ry)
    num = np.nansum(rx * ry, axis=1)
    den = np.sqrt(np.nansum(rx * rx, axis=1) * np.nansum(ry * ry, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = num / den
    ic[(n < 3) | ~(den > 1e-12)] = np.nan
    return ic


def tradable_days(signal: np.ndarray) -> np.ndarray:
    """Rows where the signal has at least two distinct finite values (something to go long/short)."""
    lo = np.where(np.isnan(signal), np.inf, signal).min(axis=1)
    hi = np.where(np.isnan(signal), -np.inf, signal).max(axis=1)
    return np.isfinite(lo) & np.isfinite(hi) & (hi - lo > 1e-12 * np.maximum(1.0, np.abs(hi)))


def backtest(signal: np.ndarray, forward_returns: np.ndarray, method: str = "rank") -> BacktestResult:
    """Daily long-short backtest of ``signal[t]`` against ``forward_returns[t]`` (= r[t+1])."""
    if signal.shape != forward_returns.shape:
        raise EvalError(f"signal shape {signal.shape} does not match returns shape {forward_returns.shape}")
    live = tradable_days(signal) & ~np.isnan(forward_returns).all(axis=1)
    if live.sum() < MIN_DAYS:
        raise EvalError(
            f"degenerate signal: only {int(live.sum())} day(s) where it ranks assets (need {MIN_DAYS})",
            hint="the alpha is constant across assets or NaN almost everywhere",
        )
    w = weights(signal, method)
    # an asset with no next-day price earns nothing that day (it could not be traded)
    pnl = (w * np.nan_to_num(forward_returns, nan=0.0)).sum(axis=1)[live]
    sd = pnl.std(ddof=1)
    sharpe = float(math.sqrt(TRADING_DAYS) * pnl.mean() / sd) if sd > 1e-15 else 0.0
    dw = np.abs(np.diff(w, axis=0)).sum(axis=1)
    turnover = float(0.5 * dw[live[1:]].mean()) if live[1:].any() else 0.0
    ic_days = _spearman_rows(signal, forward_returns)[live]
    ic = float(ic_days[np.isfinite(ic_days)].mean()) if np.isfinite(ic_days).any() else float("nan")
    return BacktestResult(sharpe, turnover, ic, int(live.sum()), float(pnl.mean() * TRADING_DAYS))


# ---------------------------------------------------------------- scoring generated answers


def extract_expression(answer: str) -> str:
    """The alpha inside a model's answer.

    Strips code fences, an ``Alpha #1:`` / ``alpha =`` label, backticks and a trailing
    ';'. When the answer goes on to explain itself ("alpha = -rank(x). It goes long
    ..."), the first line, cut at the end of its first sentence, is used if that is
    what parses.
    """
    text = answer.strip()
    fence = re.search(r"```[a-zA-Z]*\n?(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    text = re.sub(r"^\s*(?:alpha\s*(?:#\s*\d+)?\s*[:=]|alpha\d+\s*[:=])\s*", "", text, flags=re.I)
    text = text.strip().strip("`").strip().rstrip(";").strip()
    first = text.splitlines()[0].strip().rstrip(";").strip() if text else text
    sentence = re.search(r"\.(?=\s|$)", first)  # a period that ends a sentence, not 0.5
    for candidate in (text, first, first[: sentence.start()] if sentence else None):
        if candidate:
            try:
                parse(candidate)
                return candidate
            except EvalError:
                pass
    return text  # it does not parse: the error will point into the full text


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def score_alphas(expressions: list[str], panel: Panel, method: str = "rank") -> dict:
    """Score generated alphas: compile rate, backtest success, mean Sharpe/turnover/IC and per-item results.

    ``compile_rate`` is the share that parse and check; ``backtest_success`` the share
    that also evaluate on ``panel`` without error and give a usable signal: one that ranks
    assets (two or more distinct finite values) on more than ``MIN_COVERAGE`` of the dates
    after its lookback that have a next-day return (each item's ``coverage``). The means
    are over the successful items (None when there are none).
    """
    if not expressions:
        raise EvalError("no alpha expressions to score", hint="give at least one generated answer")
    if method not in METHODS:
        raise EvalError(f"unknown portfolio method {method!r}", hint=f"use one of: {', '.join(METHODS)}")
    T, N = panel.shape
    if T < MIN_DAYS + 2 or N < 2:  # a panel no alpha could be backtested on is the data's fault, not the model's
        raise EvalError(f"the price panel ({panel.source}) has {T} dates x {N} tickers; a backtest needs at least "
                        f"{MIN_DAYS + 2} dates and 2 tickers", hint="use a longer price history with more tickers")
    fwd = panel.forward_returns()
    items = []
    for i, raw in enumerate(expressions):
        expr = extract_expression(raw if isinstance(raw, str) else "")
        item: dict = {"index": i, "expression": expr, "compiled": False, "backtested": False, "error": None}
        try:
            alpha = compile_alpha(expr)
            item["compiled"] = True
            item["canonical"] = alpha.canonical
            check_panel(alpha, panel, min_dates=MIN_DAYS + 1)  # + 1: the last date has no next-day return
            result = backtest(alpha.evaluate(panel), fwd, method)
            usable_dates = T - alpha.lookback - 1  # the last date has no next-day return
            item["coverage"] = round(result.days / usable_dates, 4)
            if item["coverage"] <= MIN_COVERAGE:
                raise EvalError(f"degenerate signal: it ranks assets on {item['coverage']:.0%} of the {usable_dates} "
                                f"dates after its {alpha.lookback}-day lookback (a usable signal needs more than "
                                f"{MIN_COVERAGE:.0%})")
            # NaN (an IC with no valid day) becomes null: results.json stays strict JSON
            item.update(backtested=True, **{k: (v if math.isfinite(v) else None) for k, v in result.to_dict().items()})
        except EvalError as exc:
            item["error"] = exc.message.split("\n")[0]
        except RecursionError:  # parsed near the limit from a shallow stack, evaluated from a deep one
            item["error"] = "alpha expression is nested too deeply to evaluate"
        items.append(item)
    ok = [it for it in items if it["backtested"]]
    n = len(items)
    return {
        "n": n,
        "compile_rate": sum(it["compiled"] for it in items) / n,
        "backtest_success": len(ok) / n,
        "sharpe": _mean([it["sharpe"] for it in ok]),
        "turnover": _mean([it["turnover"] for it in ok]),
        "ic": _mean([it["ic"] for it in ok]),
        "panel": panel.source,
        "method": method,
        "items": items,
    }
