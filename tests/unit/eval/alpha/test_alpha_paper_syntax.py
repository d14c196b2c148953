"""Alphas written the way the "101 Formulaic Alphas" paper prints them parse, check and backtest.

They exercise the paper's conventions: capitalized names (Ts_Rank, SignedPower,
IndNeutralize), fractional windows (16.1219), literals like ``2.`` and ``.001``,
``* -1``, ``x^y`` with a series exponent, nested ternaries with ``||``, min/max both
as a window and element-wise, and IndClass groups.
"""

from __future__ import annotations

import pytest

from quantgrid.eval.alpha import compile_alpha, score_alphas
from quantgrid.eval.alpha.metric import default_panel

PAPER_STYLE = [
    "(rank(Ts_ArgMax(SignedPower(((returns < 0) ? stddev(returns, 20) : close), 2.), 5)) - 0.5)",
    "(-1 * correlation(rank(delta(log(volume), 2)), rank(((close - open) / open)), 6))",
    "(-1 * Ts_Rank(rank(low), 9))",
    "(rank((open - (sum(vwap, 10) / 10))) * (-1 * abs(rank((close - vwap)))))",
    "(-1 * rank(((sum(open, 5) * sum(returns, 5)) - delay((sum(open, 5) * sum(returns, 5)), 10))))",
    "((0 < ts_min(delta(close, 1), 5)) ? delta(close, 1) : ((ts_max(delta(close, 1), 5) < 0) ? delta(close, 1) "
    ": (-1 * delta(close, 1))))",
    "((rank(ts_max((vwap - close), 3)) + rank(ts_min((vwap - close), 3))) * rank(delta(volume, 3)))",
    "((-1 * sign(((close - delay(close, 7)) + delta(close, 7)))) * (1 + rank((1 + sum(returns, 250)))))",
    "((((sum(close, 8) / 8) + stddev(close, 8)) < (sum(close, 2) / 2)) ? (-1 * 1) : (((sum(close, 2) / 2) < "
    "((sum(close, 8) / 8) - stddev(close, 8))) ? 1 : (((1 < (volume / adv20)) || ((volume / adv20) == 1)) ? 1 "
    ": (-1 * 1))))",
    "((((delta((sum(close, 100) / 100), 100) / delay(close, 100)) < 0.05) || ((delta((sum(close, 100) / 100), 100) "
    "/ delay(close, 100)) == 0.05)) ? (-1 * (close - ts_min(close, 100))) : (-1 * delta(close, 3)))",
    "(scale(((sum(close, 7) / 7) - close)) + (20 * scale(correlation(vwap, delay(close, 5), 230))))",
    "(((high * low)^0.5) - vwap)",
    "(indneutralize(((correlation(delta(close, 1), delta(delay(close, 1), 1), 250) * delta(close, 1)) / close), "
    "IndClass.subindustry) / sum(((delta(close, 1) / delay(close, 1))^2), 250))",
    "(0 - (1 * (rank((sum(returns, 10) / sum(sum(returns, 2), 3))) * rank((returns * cap)))))",
    "(rank((vwap - ts_min(vwap, 16.1219))) < rank(correlation(vwap, adv180, 17.9282)))",
    "max(Ts_Rank(decay_linear(correlation(Ts_Rank(close, 3.43976), Ts_Rank(adv180, 12.0647), 18.0175), 4.20501), "
    "15.6948), Ts_Rank(decay_linear((rank(((low + open) - (vwap + vwap)))^2), 16.4662), 4.4388))",
    "SignedPower(Ts_Rank((vwap - ts_max(vwap, 15.3217)), 20.7127), delta(close, 4.96796))",
    "((rank((vwap - ts_min(vwap, 11.5783)))^Ts_Rank(correlation(Ts_Rank(vwap, 19.6462), Ts_Rank(adv60, 4.02992), "
    "18.0926), 2.70756)) * -1)",
    "((rank(correlation(sum(((open * 0.178404) + (low * (1 - 0.178404))), 12.7054), sum(adv120, 12.7054), "
    "16.6208)) < rank(delta(((((high + low) / 2) * 0.178404) + (vwap * (1 - 0.178404))), 3.69741))) * -1)",
    "(-1 * ((close - open) / ((high - low) + .001)))",
    "(rank(IndNeutralize(vwap, IndClass.industry)) - rank(decay_linear(correlation(vwap, volume, 5), 3)))",
    "min(rank(decay_linear(delta(close, 2), 8)), rank(decay_linear(correlation(IndNeutralize(volume, "
    "IndClass.sector), ((open * 0.6) + (open * (1 - 0.6))), 17), 6)))",
    "(Ts_Rank(volume, 32) * ((1 - Ts_Rank(((close + high) - low), 16)) * (1 - Ts_Rank(returns, 32))))",
]

# Alphas whose cross-section used to vanish on most days: a correlation over a window where one
# input is constant (the rank of a ticker that keeps its place, the ts_rank of a smooth adv60)
# was NaN and spread into every later window.
CONSTANT_WINDOW_ALPHAS = {
    15: "(-1 * sum(rank(correlation(rank(high), rank(volume), 3)), 3))",
    50: "(-1 * ts_max(rank(correlation(rank(volume), rank(vwap), 5)), 5))",
    68: "((Ts_Rank(correlation(rank(high), rank(adv15), 8.91644), 13.9333) < rank(delta(((close * 0.518371) + "
        "(low * (1 - 0.518371))), 1.06157))) * -1)",
    96: "(max(Ts_Rank(decay_linear(correlation(rank(vwap), rank(volume), 3.83878), 4.16783), 8.38151), "
        "Ts_Rank(decay_linear(Ts_ArgMax(correlation(Ts_Rank(close, 7.45404), Ts_Rank(adv60, 4.13242), 3.65459), "
        "12.6556), 14.0365), 13.4143)) * -1)",
    97: "((rank(decay_linear(delta(IndNeutralize(((low * 0.721001) + (vwap * (1 - 0.721001))), IndClass.industry), "
        "3.3705), 20.4523)) - Ts_Rank(decay_linear(Ts_Rank(correlation(Ts_Rank(low, 7.87871), Ts_Rank(adv60, 17.255), "
        "4.97547), 18.5925), 15.7152), 6.71659)) * -1)",
}


@pytest.mark.parametrize("expr", PAPER_STYLE, ids=[f"paper-{i}" for i in range(len(PAPER_STYLE))])
def test_paper_style_alpha_compiles(expr):
    alpha = compile_alpha(expr)
    assert alpha.lookback < 300


def test_paper_style_alphas_backtest_on_the_synthetic_panel():
    rep = score_alphas(PAPER_STYLE, default_panel())
    assert [(it["expression"], it["error"]) for it in rep["items"] if not it["backtested"]] == []


def test_constant_window_alphas_rank_assets_on_nearly_every_day():
    rep = score_alphas(list(CONSTANT_WINDOW_ALPHAS.values()), default_panel())
    coverage = {n: it["coverage"] for n, it in zip(CONSTANT_WINDOW_ALPHAS, rep["items"], strict=True)}
    assert min(coverage.values()) > 0.95, coverage
    assert rep["backtest_success"] == 1.0


def test_alpha_7_as_printed_is_degenerate_with_dollar_adv():
    # adv20 is dollar volume (the paper's definition), so "adv20 < volume" (shares) is never true
    # on this panel: the alpha is -1 for every asset, every day, and is no usable signal.
    rep = score_alphas(["((adv20 < volume) ? ((-1 * ts_rank(abs(delta(close, 7)), 60)) * sign(delta(close, 7))) "
                        ": (-1 * 1))"], default_panel())
    assert rep["backtest_success"] == 0.0 and "degenerate" in rep["items"][0]["error"]
