"""Portfolio weights, the t -> t+1 alignment (no lookahead), Sharpe/turnover/IC, and score_alphas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from quantgrid.errors import EvalError
from quantgrid.eval.alpha import (
    Panel,
    backtest,
    compile_alpha,
    extract_expression,
    score_alphas,
    synthetic_panel,
    weights,
)
from quantgrid.eval.alpha.backtest import MIN_DAYS

BENCH = Path(__file__).parents[4] / "src/quantgrid/data/builtin/alpha-bench.jsonl"


def panel_one_ticker() -> Panel:
    return Panel(np.arange(40).astype("datetime64[D]"), ["A"], {"close": np.linspace(1, 2, 40)[:, None]})


@pytest.fixture(scope="module")
def panel() -> Panel:
    return synthetic_panel(n_dates=300, n_assets=30, seed=1)


def test_rank_weights_by_hand():
    # ranks [1, 1/3, 2/3] -> demeaned [1/3, -1/3, 0] -> gross 2/3 -> [0.5, -0.5, 0]
    np.testing.assert_allclose(weights(np.array([[3.0, 1.0, 2.0]])), [[0.5, -0.5, 0.0]])
    # a NaN asset gets no weight; a constant row gets no position at all
    np.testing.assert_allclose(weights(np.array([[np.nan, 1.0, 2.0], [4.0, 4.0, 4.0]])),
                               [[0.0, -0.5, 0.5], [0.0, 0.0, 0.0]])


def test_quantile_weights_by_hand():
    w = weights(np.array([[4.0, 1.0, 3.0, 2.0, 5.0]]), method="quantile", quantile=0.2)
    np.testing.assert_allclose(w, [[0.0, -0.5, 0.0, 0.0, 0.5]])
    # ranks 1/6..6/6: one asset at or below 0.3, two above 0.7; each leg still holds half the book
    w = weights(np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]), method="quantile", quantile=0.3)
    np.testing.assert_allclose(w, [[-0.5, 0, 0, 0, 0.25, 0.25]])
    with pytest.raises(EvalError, match="portfolio method"):
        weights(np.ones((1, 3)), method="best")


def test_forward_returns_pair_date_t_with_t_plus_1():
    p = Panel(np.arange(3).astype("datetime64[D]"), ["A", "B"], {"close": np.array([[10.0, 20], [11, 18], [22, 18]])})
    np.testing.assert_allclose(p.forward_returns(), [[0.1, -0.1], [1.0, 0.0], [np.nan, np.nan]])


def test_backtest_pnl_uses_next_day_returns():
    # two assets, a signal that is long A / short B every day: weights [0.5, -0.5]
    T = MIN_DAYS + 5
    rng = np.random.default_rng(3)
    fwd = rng.normal(0, 0.01, size=(T, 2))
    signal = np.tile([1.0, 0.0], (T, 1))
    res = backtest(signal, fwd)
    pnl = 0.5 * fwd[:, 0] - 0.5 * fwd[:, 1]
    assert res.sharpe == pytest.approx(math.sqrt(252) * pnl.mean() / pnl.std(ddof=1))
    assert res.turnover == 0.0  # the book never changes
    assert res.days == T
    assert res.annual_return == pytest.approx(pnl.mean() * 252)


def test_turnover_of_a_book_that_flips_every_day_is_one():
    T = MIN_DAYS + 5
    signal = np.array([[1.0, 0.0] if t % 2 else [0.0, 1.0] for t in range(T)])
    res = backtest(signal, np.random.default_rng(0).normal(0, 0.01, (T, 2)))
    assert res.turnover == pytest.approx(1.0)


def test_a_signal_built_from_future_returns_is_perfect_and_the_language_cannot_build_one(panel):
    fwd = panel.forward_returns()
    cheat = backtest(fwd.copy(), fwd)
    assert cheat.ic == pytest.approx(1.0) and cheat.sharpe > 20  # what lookahead would look like
    # the same-day return (known at t) is nowhere near that: the alignment pairs it with r[t+1]
    honest = backtest(compile_alpha("returns").evaluate(panel), fwd)
    assert abs(honest.ic) < 0.2 and honest.sharpe < 10
    with pytest.raises(EvalError):
        compile_alpha("delay(returns, -1)")


def test_alpha_values_do_not_change_when_the_future_is_cut_off():
    # the value at date t must be the same whether or not later dates exist
    full = synthetic_panel(n_dates=130, n_assets=12, seed=5)
    cut = full.head(100)
    for line in BENCH.read_text().splitlines():
        alpha = compile_alpha(json.loads(line)["answer"])
        if alpha.lookback >= 100:
            continue
        np.testing.assert_allclose(alpha.evaluate(full)[:100], alpha.evaluate(cut), rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=alpha.source)


def test_the_planted_reversal_is_found_and_its_mirror_loses(panel):
    fwd = panel.forward_returns()
    rev = backtest(compile_alpha("rank(-1 * returns)").evaluate(panel), fwd)
    mom = backtest(compile_alpha("rank(returns)").evaluate(panel), fwd)
    assert rev.sharpe > 1.0 and rev.ic > 0
    assert mom.sharpe == pytest.approx(-rev.sharpe) and mom.ic == pytest.approx(-rev.ic)


def test_noise_has_no_edge(panel):
    noise = np.random.default_rng(11).normal(size=panel.shape)
    res = backtest(noise, panel.forward_returns())
    assert abs(res.ic) < 0.02 and abs(res.sharpe) < 2.0 and res.turnover > 0.5


def test_degenerate_signals_fail(panel):
    fwd = panel.forward_returns()
    with pytest.raises(EvalError, match="degenerate"):
        backtest(np.ones(panel.shape), fwd)  # constant across assets
    with pytest.raises(EvalError, match="degenerate"):
        backtest(np.full(panel.shape, np.nan), fwd)
    with pytest.raises(EvalError, match="shape"):
        backtest(np.ones((3, 3)), fwd)


def test_score_alphas_counts_compile_and_backtest(panel):
    answers = [
        "rank(-1 * returns)",                       # ok
        "Alpha #7: rank(-1 * delta(close, 5))",     # ok once the label is stripped
        "```\nrank(vwap - close)\n```",              # ok inside a code fence
        "rank(close",                               # syntax error
        "rank(closing_price)",                      # unknown field
        "1",                                        # compiles, degenerate
        "rank(close) * 0",                          # compiles, degenerate
        "ts_rank(close, 290)",                      # compiles, panel too short to trade
        "indneutralize(close, IndClass.subindustry)",  # ok: the synthetic panel has subindustries
    ]
    rep = score_alphas(answers, panel)
    assert rep["n"] == 9
    assert rep["compile_rate"] == pytest.approx(7 / 9)
    assert rep["backtest_success"] == pytest.approx(4 / 9)
    items = rep["items"]
    assert [it["backtested"] for it in items] == [True, True, True, False, False, False, False, False, True]
    assert "syntax error" in items[3]["error"] and "unknown field" in items[4]["error"]
    assert "degenerate" in items[5]["error"] and "too short" in items[7]["error"]
    ok = [it for it in items if it["backtested"]]
    assert rep["sharpe"] == pytest.approx(np.mean([it["sharpe"] for it in ok]))
    assert rep["ic"] == pytest.approx(np.mean([it["ic"] for it in ok]))
    assert rep["turnover"] == pytest.approx(np.mean([it["turnover"] for it in ok]))
    json.dumps(rep)  # the report goes into results.json as is


def test_score_alphas_with_nothing_that_runs(panel):
    rep = score_alphas(["nonsense(", ""], panel)
    assert rep["compile_rate"] == 0 and rep["backtest_success"] == 0 and rep["sharpe"] is None
    with pytest.raises(EvalError, match="no alpha"):
        score_alphas([], panel)
    with pytest.raises(EvalError, match="needs at least 22 dates and 2 tickers"):
        score_alphas(["rank(close)"], synthetic_panel(n_dates=21, n_assets=5))
    with pytest.raises(EvalError, match="2 tickers"):
        score_alphas(["rank(close)"], panel_one_ticker())


@pytest.mark.parametrize(
    "answer, expr",
    [
        ("rank(close)", "rank(close)"),
        ("Alpha #1: (-1 * rank(open))", "(-1 * rank(open))"),
        ("alpha = rank(open);", "rank(open)"),
        ("Alpha: rank(open)", "rank(open)"),
        ("`rank(open)`", "rank(open)"),
        ("Here you go:\n```python\nrank(open)\n```\nIt fades opens.", "rank(open)"),
        ("alpha = -rank(close / delay(close, 5) - 1). It goes long the losers.", "-rank(close / delay(close, 5) - 1)"),
        ("rank(close * 0.5)\nThis ranks half the close.", "rank(close * 0.5)"),
        ("rank(close", "rank(close"),  # kept whole, so the syntax error points into it
    ],
)
def test_extract_expression(answer, expr):
    assert extract_expression(answer) == expr


def test_coverage_threshold_counts_dates_after_the_lookback(panel):
    # delta(close, 5) needs 5 past dates; an item that trades on every date after them has coverage 1
    rep = score_alphas(["rank(delta(close, 5))"], panel)
    assert rep["items"][0]["coverage"] == 1.0 and rep["items"][0]["days"] == panel.shape[0] - 5 - 1
    # a signal that is constant across assets on the first 80% of the dates: 20% coverage -> no success
    T = panel.shape[0]
    cut = int(0.8 * T)
    flags = np.zeros(panel.shape)
    flags[cut:] = 1.0
    p = Panel(panel.dates, panel.tickers, {**panel.fields, "cap": flags}, panel.groups)
    rep = score_alphas(["cap * rank(close)"], p)
    item = rep["items"][0]
    assert not item["backtested"] and rep["backtest_success"] == 0.0
    from quantgrid.eval.alpha.backtest import MIN_COVERAGE

    assert MIN_COVERAGE == 0.5 and "degenerate" in item["error"] and "more than 50%" in item["error"]
    assert item["coverage"] == pytest.approx((T - cut - 1) / (T - 1), abs=1e-3)
