"""Every operator against values computed by hand on tiny frames (expected numbers written out)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantgrid.eval.alpha import Panel, compile_alpha

nan = np.nan

# Two assets, five dates. Asset 0's volume is 10 x its close (correlation exactly 1).
CLOSE = [[1, 5], [2, 3], [4, 3], [3, 1], [5, 2]]
VOLUME = [[10, 1], [20, 2], [40, 3], [30, 4], [50, 5]]
OPEN = [[1, 4], [1, 4], [3, 4], [2, 4], [4, 4]]  # asset 1's open never moves


def panel(close=CLOSE, **fields) -> Panel:
    close = np.asarray(close, dtype=float)
    T, N = close.shape
    groups = {k: np.asarray(fields.pop(k)) for k in ("industry",) if k in fields}
    data = {"close": close, **{k: np.asarray(v, dtype=float) for k, v in fields.items()}}
    dates = np.arange(T).astype("datetime64[D]")
    return Panel(dates, [f"A{i}" for i in range(N)], data, groups)


P = panel(CLOSE, volume=VOLUME, open=OPEN)


def ev(expr: str, p: Panel = P) -> np.ndarray:
    return compile_alpha(expr).evaluate(p)


def same(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-12, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------- time-series operators


def test_fields_and_arithmetic():
    same(ev("close"), CLOSE)
    same(ev("close + 1"), [[2, 6], [3, 4], [5, 4], [4, 2], [6, 3]])
    same(ev("-close * 2 - 1"), [[-3, -11], [-5, -7], [-9, -7], [-7, -3], [-11, -5]])
    same(ev("close / 2"), [[0.5, 2.5], [1, 1.5], [2, 1.5], [1.5, 0.5], [2.5, 1]])
    same(ev("close ^ 2"), [[1, 25], [4, 9], [16, 9], [9, 1], [25, 4]])


def test_delay_and_delta():
    same(ev("delay(close, 1)"), [[nan, nan], [1, 5], [2, 3], [4, 3], [3, 1]])
    same(ev("delta(close, 2)"), [[nan, nan], [nan, nan], [3, -2], [1, -2], [1, -1]])


def test_returns_are_close_to_close():
    same(ev("returns"), [[nan, nan], [1, -0.4], [1, 0], [-0.25, -2 / 3], [2 / 3, 1]])


def test_sum_product_mean():
    same(ev("sum(close, 3)"), [[nan, nan], [nan, nan], [7, 11], [9, 7], [12, 6]])
    same(ev("product(close, 3)"), [[nan, nan], [nan, nan], [8, 45], [24, 9], [60, 6]])
    same(ev("ts_mean(close, 2)"), [[nan, nan], [1.5, 4], [3, 3], [3.5, 2], [4, 1.5]])


def test_non_integer_windows_are_floored():
    same(ev("sum(close, 3.7)"), ev("sum(close, 3)"))


def test_ts_min_max_and_the_papers_min_max_with_a_window():
    same(ev("ts_min(close, 3)"), [[nan, nan], [nan, nan], [1, 3], [2, 1], [3, 1]])
    same(ev("ts_max(close, 3)"), [[nan, nan], [nan, nan], [4, 5], [4, 3], [5, 3]])
    same(ev("min(close, 3)"), ev("ts_min(close, 3)"))  # a number as 2nd argument: a window
    same(ev("max(close, 3)"), ev("ts_max(close, 3)"))


def test_elementwise_min_max_of_two_series():
    same(ev("min(close, open)"), [[1, 4], [1, 3], [3, 3], [2, 1], [4, 2]])
    same(ev("max(close, open)"), [[1, 5], [2, 4], [4, 4], [3, 4], [5, 4]])


def test_elementwise_min_max_propagate_nan():
    # delay(close, 1) is undefined on the first date: so is the min/max with it (no value before its history)
    same(ev("min(close, delay(close, 1))"), [[nan, nan], [1, 3], [2, 3], [3, 1], [3, 1]])
    same(ev("max(close, delay(close, 1))"), [[nan, nan], [2, 5], [4, 3], [4, 3], [5, 2]])
    assert compile_alpha("max(close, delay(close, 1))").lookback == 1


def test_days_since_max_min_count_back_from_today():
    # the other reading of the paper's ts_argmax: 0 = today ... d - 1 = the oldest day
    same(ev("days_since_max(close, 3)"), [[nan, nan], [nan, nan], [0, 2], [1, 2], [0, 2]])
    same(ev("days_since_min(close, 3)"), [[nan, nan], [nan, nan], [2, 1], [2, 0], [1, 1]])
    same(ev("ts_arg_max(close, 3)"), ev("days_since_max(close, 3)"))  # WorldQuant BRAIN's spelling


def test_ts_argmax_argmin_count_from_the_oldest_day():
    # windows of asset 0: [1,2,4] [2,4,3] [4,3,5]; asset 1: [5,3,3] [3,3,1] [3,1,2]
    same(ev("ts_argmax(close, 3)"), [[nan, nan], [nan, nan], [3, 1], [2, 1], [3, 1]])
    same(ev("ts_argmin(close, 3)"), [[nan, nan], [nan, nan], [1, 2], [1, 3], [2, 2]])


def test_ts_rank_is_todays_place_in_the_window():
    # asset 1 at row 2: 3 in [5,3,3] -> two-way tie for lowest -> rank 1.5 of 3
    same(ev("ts_rank(close, 3)"), [[nan, nan], [nan, nan], [1, 0.5], [2 / 3, 1 / 3], [1, 2 / 3]])


def test_stddev_is_the_sample_estimator():
    got = ev("stddev(close, 3)")
    # [1,2,4]: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9, / (3 - 1) = 7/3
    assert got[2, 0] == pytest.approx(math.sqrt(7 / 3))
    # [5,3,3]: 16/9 + 4/9 + 4/9 = 24/9, / 2 = 4/3
    assert got[2, 1] == pytest.approx(math.sqrt(4 / 3))
    assert np.isnan(got[:2]).all()
    assert np.isnan(ev("stddev(close, 1)")).all()


def test_ts_skewness():
    got = ev("ts_skewness(close, 3)")
    # [1,2,4]: deviations -4/3, -1/3, 5/3; m2 = 42/27, m3 = (-64 - 1 + 125)/81 = 60/81
    assert got[2, 0] == pytest.approx((60 / 81) / (42 / 27) ** 1.5)
    # [3,3,1]: deviations 2/3, 2/3, -4/3; m2 = 24/27, m3 = (8 + 8 - 64)/81 = -48/81
    assert got[3, 1] == pytest.approx((-48 / 81) / (24 / 27) ** 1.5)
    same(ev("ts_skew(close, 3)"), got)
    assert np.isnan(ev("ts_skewness(open, 3)")[2:, 1]).all()  # a flat window has no skew


def test_covariance_and_correlation():
    cov = ev("covariance(close, volume, 3)")
    corr = ev("correlation(close, volume, 3)")
    # asset 0: volume = 10 x close -> covariance 10 x var, correlation 1
    assert cov[2, 0] == pytest.approx(10 * 7 / 3)
    same(corr[2:, 0], [1, 1, 1])
    # asset 1, row 2: x=[5,3,3] (dev 4/3,-2/3,-2/3), y=[1,2,3] (dev -1,0,1): sxy=-2, sxx=8/3, syy=2
    assert cov[2, 1] == pytest.approx(-1.0)
    assert corr[2, 1] == pytest.approx(-2 / math.sqrt(8 / 3 * 2))
    # row 3: x=[3,3,1] (dev 2/3,2/3,-4/3), y=[2,3,4]: sxy=-2, sxx=8/3 -> the same numbers
    assert corr[3, 1] == pytest.approx(-math.sqrt(3) / 2)
    assert np.isnan(corr[:2]).all()


def test_correlation_over_a_constant_window_is_zero_not_nan():
    corr = ev("correlation(close, open, 3)")
    same(corr[2:, 1], [0, 0, 0])  # asset 1's open is constant: no co-movement, and no NaN to spread
    # asset 0: close [1,2,4] vs open [1,1,3] -> r = 0.9449; [2,4,3] vs [1,3,2] -> 1; [4,3,5] vs [3,2,4] -> 1
    np.testing.assert_allclose(corr[2:, 0], [5 / math.sqrt(28), 1, 1], rtol=1e-9)
    # the constant stretch no longer wipes out every later window built on it
    assert np.isfinite(ev("sum(correlation(close, open, 3), 2)")[3:]).all()


def test_correlation_with_a_nan_in_the_window_stays_nan():
    p = panel([[1, 1], [2, 2], [3, 3], [4, 4]], open=[[7, 7], [7, nan], [7, 7], [7, 7]])
    # asset 0: open constant -> 0; asset 1: a missing open in the window -> NaN, not 0
    same(ev("correlation(close, open, 3)", p), [[nan, nan], [nan, nan], [0, nan], [0, nan]])


def test_decay_linear_weighs_today_most():
    # weights oldest..today = 1, 2, 3 over 6: [1,2,4] -> 17/6; [5,3,3] -> 20/6
    same(ev("decay_linear(close, 3)"), [[nan, nan], [nan, nan], [17 / 6, 20 / 6], [19 / 6, 12 / 6], [25 / 6, 11 / 6]])


def test_adv_is_average_dollar_volume():
    # the paper: adv{d} = average daily dollar volume = mean of volume x vwap over d days
    p = panel(CLOSE, volume=VOLUME, vwap=[[1, 2], [2, 2], [3, 1], [1, 1], [2, 4]])
    # dollar volume: asset 0 [10, 40, 120, 30, 100], asset 1 [2, 4, 3, 4, 20]
    same(ev("adv2", p), [[nan, nan], [25, 3], [80, 3.5], [75, 3.5], [65, 12]])
    same(ev("ts_mean(volume, 2)", p), [[nan, nan], [15, 1.5], [30, 2.5], [35, 3.5], [40, 4.5]])  # share volume


def test_adv_uses_the_derived_vwap_when_the_file_has_none():
    import pandas as pd

    from quantgrid.eval.alpha.panel import panel_from_frame

    rows = [{"date": f"2024-01-0{t + 1}", "ticker": "A", "open": 1.0, "high": 3.0 + t, "low": 1.0, "close": 2.0,
             "volume": 10.0} for t in range(3)]
    p = panel_from_frame(pd.DataFrame(rows))
    # typical price (high + low + close) / 3 = 2, 7/3, 8/3; x 10 shares; mean of the last two
    same(ev("adv2", p), [[nan], [(20 + 70 / 3) / 2], [(70 / 3 + 80 / 3) / 2]])


def test_a_nan_inside_a_window_gives_nan():
    p = panel([[1, 1], [nan, 2], [3, 3], [4, 4], [5, 5]], volume=[[1, 2], [2, 1], [4, 5], [3, 3], [1, 2]])
    same(ev("sum(close, 2)", p), [[nan, nan], [nan, 3], [nan, 5], [7, 7], [9, 9]])
    # every window operator: asset 0 has no value until the window has slid past the gap
    for op in ("ts_mean", "ts_min", "ts_max", "ts_rank", "stddev", "product", "ts_argmax", "ts_argmin",
               "decay_linear", "ts_skewness"):
        got = ev(f"{op}(close, 3)", p)
        assert np.isnan(got[:4, 0]).all() and np.isfinite(got[4, 0]), op
        assert np.isnan(got[:2, 1]).all() and np.isfinite(got[2:, 1]).all(), op
    for op in ("correlation", "covariance"):
        got = ev(f"{op}(close, volume, 3)", p)
        assert np.isnan(got[:4, 0]).all() and np.isfinite(got[4, 0]), op


# ---------------------------------------------------------------- cross-sectional operators

X = [[3, 1, 2, 2], [nan, 5, 1, 3]]
Q = panel(X, industry=[[0, 0, 1, 1], [0, 0, 1, 1]])


def test_rank_is_a_percentile_with_average_ties_and_nan_ignored():
    same(ev("rank(close)", Q), [[1.0, 0.25, 0.625, 0.625], [nan, 1.0, 1 / 3, 2 / 3]])


def test_scale_makes_absolute_weights_sum_to_a():
    same(ev("scale(close)", Q), [[3 / 8, 1 / 8, 2 / 8, 2 / 8], [nan, 5 / 9, 1 / 9, 3 / 9]])
    same(ev("scale(close, 2)", Q), [[6 / 8, 2 / 8, 4 / 8, 4 / 8], [nan, 10 / 9, 2 / 9, 6 / 9]])


def test_indneutralize_demeans_within_each_group():
    # row 0: group 0 = {3, 1} mean 2, group 1 = {2, 2}; row 1: group 0 = {5} (nan skipped), group 1 = {1, 3}
    expected = [[1, -1, 0, 0], [nan, 0, -1, 1]]
    same(ev("indneutralize(close, IndClass.industry)", Q), expected)
    same(ev("IndNeutralize(close, industry)", Q), expected)


def test_signedpower_keeps_the_sign():
    same(ev("signedpower(close - 2, 2)", Q), [[1, -1, 0, 0], [nan, 9, -1, 1]])
    same(ev("signedpower(close - 2, 0.5)", Q), [[1, -1, 0, 0], [nan, math.sqrt(3), -1, 1]])


def test_elementary_functions():
    p = panel([[-2, 0, 1, math.e]])
    same(ev("abs(close)", p), [[2, 0, 1, math.e]])
    same(ev("sign(close)", p), [[-1, 0, 1, 1]])
    same(ev("log(close)", p), [[nan, nan, 0, 1]])  # log of <= 0 is missing, not -inf
    same(ev("sqrt(close)", p), [[nan, 0, 1, math.sqrt(math.e)]])
    same(ev("1 / close", p), [[-0.5, nan, 1, 1 / math.e]])  # division by zero is missing, not inf


# ---------------------------------------------------------------- logic


def test_comparisons_give_one_zero_and_nan_stays_nan():
    same(ev("close > 2", Q), [[1, 0, 0, 0], [nan, 1, 0, 1]])
    same(ev("close <= 2", Q), [[0, 1, 1, 1], [nan, 0, 1, 0]])
    same(ev("close == 2", Q), [[0, 0, 1, 1], [nan, 0, 0, 0]])
    same(ev("close != 2", Q), [[1, 1, 0, 0], [nan, 1, 1, 1]])
    same(ev("close >= 3", Q), [[1, 0, 0, 0], [nan, 1, 0, 1]])
    same(ev("close < 3", Q), [[0, 1, 1, 1], [nan, 0, 1, 0]])


def test_and_or():
    same(ev("(close > 1) && (close < 3)", Q), [[0, 0, 1, 1], [nan, 0, 0, 0]])
    same(ev("(close < 2) || (close > 4)", Q), [[0, 1, 0, 0], [nan, 1, 1, 0]])


def test_ternary_picks_per_cell():
    same(ev("close > 2 ? close : -1 * close", Q), [[3, -1, -2, -2], [nan, 5, -1, 3]])
    same(ev("1 < 2 ? close : 0", Q), X)  # a scalar condition broadcasts


def test_repeated_subexpressions_are_computed_once(monkeypatch):
    from quantgrid.eval.alpha import operators

    calls = []
    real = operators.OPS["sum"]
    monkeypatch.setitem(operators.OPS, "sum", real.__class__(real.name, lambda x, d: calls.append(d) or real.fn(x, d),
                                                            real.signature, real.doc))
    got = ev("sum(close, 2) / 2 + sum(close, 2)")
    assert calls == [2]
    same(got, 1.5 * ev("ts_sum(close, 2)"))
