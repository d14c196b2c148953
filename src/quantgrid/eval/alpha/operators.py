"""The operators of the alpha language: vectorized kernels over a (dates x assets) array.

Every series is a float64 array of shape ``(T, N)``: one row per date, one column per
asset. Conventions, taken from Kakushadze's "101 Formulaic Alphas" (2016), appendix A:

- ``ts_*`` operators look back over the past ``d`` rows *including today*; a
  non-integer ``d`` is floored. The first ``d - 1`` rows, and any window holding a
  NaN, give NaN: a value is either computed on a full window or not at all, so no
  operator can silently use fewer days (or future days) than it says.
- ``rank`` is the cross-sectional percentile rank in (0, 1], ties averaged, NaN
  ignored. ``ts_rank`` is the same within the time window (today's place among the
  last ``d`` values, divided by ``d``).
- ``ts_argmax``/``ts_argmin`` give the position of the extreme inside the window,
  1 = oldest day ... ``d`` = today (first occurrence on ties), as in the common
  pandas implementations of the paper (``rolling(d).apply(np.argmax) + 1``). The paper
  leaves this open; ``days_since_max``/``days_since_min`` give the other reading,
  0 = today ... ``d - 1`` = the oldest day (WorldQuant BRAIN's ``ts_arg_max``).
- ``stddev``/``covariance``/``correlation`` use the sample (ddof=1) estimators,
  matching ``pandas.rolling``. A correlation over a window where either input is
  constant is 0 (there is no co-movement to measure), as in most implementations; a
  NaN there would make every later window that contains the day NaN too, and a
  smooth input such as ``ts_rank(adv60, 4)`` is constant for days at a time.
- Element-wise ``min(x, y)``/``max(x, y)`` are NaN when either side is NaN (the
  paper's reading: an undefined input gives an undefined output), so no value
  appears before the history an expression declares.
- ``decay_linear`` weights today ``d``, yesterday ``d - 1``, ... the oldest 1,
  rescaled to sum to 1.

Arguments are typed in each operator's ``signature``: ``x`` a series (or a number),
``d`` a window (a positive number literal), ``a`` a number literal, ``g`` a group
(``IndClass.industry``...). ``?`` marks an optional trailing argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

# ---------------------------------------------------------------- helpers


def finite(a: np.ndarray) -> np.ndarray:
    """Replace +-inf (division by zero, log(0), overflow) by NaN: they carry no ranking information."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        a = np.where(np.isfinite(a), a, np.nan)
    return a


def delay(x: np.ndarray, d: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if d < x.shape[0]:
        out[d:] = x[: x.shape[0] - d]
    return out


def delta(x: np.ndarray, d: int) -> np.ndarray:
    return x - delay(x, d)


# Rolling statistics come from pandas' rolling windows (compiled, O(T * N) memory,
# numerically careful online algorithms). With min_periods = d (the default) a window
# holding a NaN gives NaN, as the conventions above require. The few operators pandas
# has no vectorized form for (product, argmax/argmin, decay_linear) loop over the d
# lags instead, each lag a whole (T, N) array: d vectorized passes, and never a
# (T, N, d) window tensor (2.5 GB per temporary for 2500 dates x 500 assets, d = 250).


def _roll(x: np.ndarray, d: int):
    return pd.DataFrame(x, copy=False).rolling(d)


def _np(frame) -> np.ndarray:
    return frame.to_numpy(dtype=np.float64)


def lags(x: np.ndarray, d: int):
    """``x`` shifted by 0, 1, ..., d - 1 rows: today first, the oldest day of the window last."""
    for k in range(d):
        yield x if k == 0 else delay(x, k)


def ts_sum(x: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).sum())


def ts_mean(x: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).mean())


def ts_min(x: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).min())


def ts_max(x: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).max())


def ts_rank(x: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).rank(pct=True, method="average"))


def stddev(x: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).std()) if d >= 2 else np.full_like(x, np.nan)


def covariance(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    return _np(_roll(x, d).cov(pd.DataFrame(y))) if d >= 2 else np.full_like(x, np.nan)


def _flat(x: np.ndarray, d: int) -> np.ndarray:
    """Windows that are constant up to rounding (variance tiny next to the mean square)."""
    return _np(_roll(x, d).var(ddof=0)) <= 1e-12 * ts_mean(x * x, d)


def correlation(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    if d < 2:
        return np.full_like(x, np.nan)
    r = _np(_roll(x, d).corr(pd.DataFrame(y)))
    # a constant window has no co-movement (pandas gives NaN, inf or rounding noise there);
    # a window holding a NaN input stays NaN
    flat = (_flat(x, d) | _flat(y, d)) & ~np.isnan(ts_sum(x + y, d))
    return np.where(flat, 0.0, np.clip(r, -1.0, 1.0))


def ts_skewness(x: np.ndarray, d: int) -> np.ndarray:
    """Population skewness of the window, mean(c^3) / mean(c^2)^1.5; NaN for a flat window."""
    if d < 3:
        return np.full_like(x, np.nan)
    g1 = _np(_roll(x, d).skew()) * (d - 2) / np.sqrt(d * (d - 1))  # pandas gives the bias-corrected G1
    return np.where(_flat(x, d), np.nan, g1)


def ts_product(x: np.ndarray, d: int) -> np.ndarray:
    out = np.ones_like(x)
    for lag in lags(x, d):
        out *= lag
    return finite(out)


def _argext(x: np.ndarray, d: int, better) -> np.ndarray:
    # walk the window oldest -> today, so a strict comparison keeps the first occurrence on ties
    best = delay(x, d - 1)
    pos, bad = np.ones_like(x), np.isnan(best)
    for p in range(2, d + 1):
        lag = delay(x, d - p)
        take = better(lag, best)
        best = np.where(take, lag, best)
        pos = np.where(take, float(p), pos)
        bad |= np.isnan(lag)
    pos[bad] = np.nan
    return pos


def ts_argmax(x: np.ndarray, d: int) -> np.ndarray:
    return _argext(x, d, np.greater)


def ts_argmin(x: np.ndarray, d: int) -> np.ndarray:
    return _argext(x, d, np.less)


def days_since_max(x: np.ndarray, d: int) -> np.ndarray:
    return d - ts_argmax(x, d)


def days_since_min(x: np.ndarray, d: int) -> np.ndarray:
    return d - ts_argmin(x, d)


def decay_linear(x: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros_like(x)
    for k, lag in enumerate(lags(x, d)):
        out += (d - k) * lag  # today weighs d, the oldest day 1
    return out / (d * (d + 1) / 2.0)


def rank(x: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile rank per row: average ranks for ties, divided by the row's count; NaN kept.

    One argsort over the whole array (pandas' ``rank(axis=1)`` is ~10x slower on a
    wide panel, and the backtest ranks every signal three times).
    """
    x = np.asarray(x, dtype=np.float64)
    T, N = x.shape
    missing = np.isnan(x)
    filled = np.where(missing, np.inf, x)  # NaN sorts last and never ties with a value (inf is cleaned earlier)
    order = np.argsort(filled, axis=1)
    v = np.take_along_axis(filled, order, axis=1)
    pos = np.broadcast_to(np.arange(1, N + 1, dtype=np.float64), (T, N))
    starts = np.ones((T, N), dtype=bool)
    starts[:, 1:] = v[:, 1:] != v[:, :-1]
    ends = np.ones((T, N), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0.0), axis=1)  # first position of each tie run
    last = np.minimum.accumulate(np.where(ends, pos, np.inf)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((T, N))
    np.put_along_axis(ranks, order, (first + last) / 2.0, axis=1)
    count = (~missing).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ranks / count
    out[missing] = np.nan
    return out


def scale(x: np.ndarray, a: float = 1.0) -> np.ndarray:
    gross = np.nansum(np.abs(x), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return finite(x * a / gross)


def signedpower(x, a):
    with np.errstate(invalid="ignore", over="ignore"):
        return finite(np.sign(x) * np.power(np.abs(x), a))


def power(x, a):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return finite(np.power(x, a))


def log(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return finite(np.log(np.where(np.asarray(x) > 0, x, np.nan)))


def sqrt(x):
    return np.sqrt(np.where(np.asarray(x) >= 0, x, np.nan))


def indneutralize(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Subtract each group's cross-sectional mean (per date); ``groups`` holds int codes, -1 = unknown."""
    T, N = x.shape
    valid = ~np.isnan(x) & (groups >= 0)
    k = int(groups.max()) + 1 if groups.size and groups.max() >= 0 else 1
    flat = np.arange(T)[:, None] * k + np.where(groups >= 0, groups, 0)  # one bin per (date, group)
    sums = np.bincount(flat[valid], weights=x[valid], minlength=T * k)
    counts = np.bincount(flat[valid], minlength=T * k)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    out = x - means[flat]
    out[~valid] = np.nan
    return out


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable
    signature: tuple[str, ...]  # kinds: "x", "d", "a", "g"; a trailing "?" marks optional
    doc: str
    history: Callable[[int], int] = lambda d: d - 1  # extra past rows a window of d needs

    @property
    def min_args(self) -> int:
        return sum(1 for s in self.signature if not s.endswith("?"))

    @property
    def usage(self) -> str:
        """``correlation(x, y, d)``, ``scale(x, a=1)``: shown when a call has the wrong arguments."""
        names = iter(["x", "y", "z"])
        args = []
        for kind in self.signature:
            k = kind.rstrip("?")
            text = next(names) if k == "x" else "IndClass.industry" if k == "g" else k
            args.append(text + ("=1" if kind.endswith("?") else ""))
        return f"{self.name}({', '.join(args)})"


def _lag(d: int) -> int:
    return d


OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op("abs", np.abs, ("x",), "absolute value"),
        Op("log", log, ("x",), "natural log; NaN for values <= 0"),
        Op("sign", np.sign, ("x",), "-1, 0 or 1"),
        Op("sqrt", sqrt, ("x",), "square root; NaN for negative values"),
        Op("rank", rank, ("x",), "cross-sectional percentile rank in (0, 1]"),
        Op("scale", scale, ("x", "a?"), "rescale each date so sum(abs(x)) = a (default 1)"),
        Op("signedpower", signedpower, ("x", "x"), "sign(x) * abs(x) ^ a"),
        Op("delay", delay, ("x", "d"), "value d days ago", _lag),
        Op("delta", delta, ("x", "d"), "today's value minus the value d days ago", _lag),
        Op("correlation", correlation, ("x", "x", "d"), "time-series correlation over the past d days"),
        Op("covariance", covariance, ("x", "x", "d"), "time-series covariance over the past d days"),
        Op("stddev", stddev, ("x", "d"), "time-series standard deviation over the past d days"),
        Op("ts_skewness", ts_skewness, ("x", "d"), "time-series skewness over the past d days"),
        Op("sum", ts_sum, ("x", "d"), "time-series sum over the past d days"),
        Op("product", ts_product, ("x", "d"), "time-series product over the past d days"),
        Op("ts_mean", ts_mean, ("x", "d"), "time-series mean over the past d days"),
        Op("ts_min", ts_min, ("x", "d"), "time-series minimum over the past d days"),
        Op("ts_max", ts_max, ("x", "d"), "time-series maximum over the past d days"),
        Op("ts_argmin", ts_argmin, ("x", "d"), "day of the minimum in the window (1 = oldest, d = today)"),
        Op("ts_argmax", ts_argmax, ("x", "d"), "day of the maximum in the window (1 = oldest, d = today)"),
        Op("days_since_min", days_since_min, ("x", "d"), "days since the window's minimum (0 = today)"),
        Op("days_since_max", days_since_max, ("x", "d"), "days since the window's maximum (0 = today)"),
        Op("ts_rank", ts_rank, ("x", "d"), "today's percentile rank within the past d days"),
        Op("decay_linear", decay_linear, ("x", "d"), "linearly weighted moving average (today weighs d)"),
        Op("indneutralize", indneutralize, ("x", "g"), "demean x within each industry group, per date"),
        # min/max take a window when the second argument is a number (as in the paper),
        # otherwise they are element-wise (NaN if either side is NaN); the compiler rewrites
        # the windowed form to ts_min/ts_max.
        Op("min", np.minimum, ("x", "x"), "element-wise minimum, or ts_min(x, d) when d is a number"),
        Op("max", np.maximum, ("x", "x"), "element-wise maximum, or ts_max(x, d) when d is a number"),
    ]
}

# Spellings that models (and other papers) use for the same operators.
ALIASES: dict[str, str] = {
    "corr": "correlation", "ts_corr": "correlation", "ts_correlation": "correlation",
    "cov": "covariance", "ts_cov": "covariance", "ts_covariance": "covariance",
    "std": "stddev", "ts_skew": "ts_skewness", "skewness": "ts_skewness", "ts_std": "stddev", "ts_stddev": "stddev",
    "ts_sum": "sum", "ts_product": "product", "ts_delay": "delay", "ts_delta": "delta",
    "mean": "ts_mean", "sma": "ts_mean", "ts_decay_linear": "decay_linear", "decaylinear": "decay_linear",
    "signed_power": "signedpower", "ind_neutralize": "indneutralize", "neutralize": "indneutralize",
    "ts_arg_max": "days_since_max", "ts_arg_min": "days_since_min",  # WorldQuant BRAIN's spelling and reading
    "tsrank": "ts_rank", "tsmin": "ts_min", "tsmax": "ts_max", "tsargmax": "ts_argmax", "tsargmin": "ts_argmin",
}  # fmt: skip
