"""Kernels written here (lag loops, NaN guards) agree with pandas reference computations on data with gaps.

sum/mean/std/min/max/cov/ts_rank call pandas' rolling windows directly, so they are not listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantgrid.eval.alpha import Panel, compile_alpha

T, N, D = 60, 5, 7


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(T, N))
    y = 0.5 * x + rng.normal(size=(T, N))
    x[[5, 30], [1, 3]] = np.nan  # gaps: windows that hold them must be NaN
    y[17, 2] = np.nan
    panel = Panel(np.arange(T).astype("datetime64[D]"), [f"A{i}" for i in range(N)], {"close": x, "open": y})
    return panel, pd.DataFrame(x), pd.DataFrame(y)


def ev(expr, panel):
    return compile_alpha(expr).evaluate(panel)


def close_to(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-9, atol=1e-12, equal_nan=True)


def _population_skew(w):
    c = w - w.mean()
    return (c**3).mean() / (c**2).mean() ** 1.5


def _apply(df, d, fn):
    return df.rolling(d).apply(fn, raw=True)


@pytest.mark.parametrize(
    "expr, reference",
    [
        (f"correlation(close, open, {D})", lambda x, y: x.rolling(D).corr(y)),
        (f"product(close, {D})", lambda x, y: _apply(x, D, np.prod)),
        (f"ts_argmax(close, {D})", lambda x, y: _apply(x, D, np.argmax) + 1),
        (f"ts_argmin(close, {D})", lambda x, y: _apply(x, D, np.argmin) + 1),
        (f"decay_linear(close, {D})", lambda x, y: _apply(x, D, lambda w: w @ np.arange(1, D + 1) / (D * (D + 1) / 2))),
        (f"delay(close, {D})", lambda x, y: x.shift(D)),
        (f"delta(close, {D})", lambda x, y: x.diff(D)),
        (f"ts_skewness(close, {D})", lambda x, y: _apply(x, D, _population_skew)),
    ],
)
def test_matches_pandas(data, expr, reference):
    panel, x, y = data
    close_to(ev(expr, panel), reference(x, y))


def test_cross_sectional_rank_matches_pandas_with_ties_and_gaps():
    from quantgrid.eval.alpha.operators import rank

    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=(200, 9)).astype(float)  # many ties
    x[rng.random(x.shape) < 0.2] = np.nan
    x[7] = np.nan  # a row with nothing to rank
    x[8] = 2.0  # a row that is all one value
    close_to(rank(x), pd.DataFrame(x).rank(axis=1, pct=True, method="average"))
