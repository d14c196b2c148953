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
  pandas implementations of the paper.
- ``stddev``/``covariance``/``correlation`` use the sample (ddof=1) estimators,
  matching ``pandas.rolling``. A correlation over a constant window is NaN.
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
from numpy.lib.stride_tricks import sliding_window_view

# ---------------------------------------------------------------- helpers


def _finite(a: np.ndarray) -> np.ndarray:
    """Replace +-inf (division by zero, log(0), overflow) by NaN: they carry no ranking information."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        a = np.where(np.isfinite(a), a, np.nan)
    return a


def windows(x: np.ndarray, d: int) -> np.ndarray:
    """A ``(T, N, d)`` view: ``[t, i, :]`` is asset i's last ``d`` values up to row t, oldest first.

    The first ``d - 1`` rows are padded with NaN, so every reduction over the last
    axis gives NaN there. It is a strided view; no data is copied.
    """
    pad = np.full((d - 1,) + x.shape[1:], np.nan)
    return sliding_window_view(np.concatenate([pad, x], axis=0), d, axis=0)


def delay(x: np.ndarray, d: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if d < x.shape[0]:
        out[d:] = x[: x.shape[0] - d]
    return out


def delta(x: np.ndarray, d: int) -> np.ndarray:
    return x - delay(x, d)


def ts_sum(x: np.ndarray, d: int) -> np.ndarray:
    return windows(x, d).sum(axis=-1)


def ts_mean(x: np.ndarray, d: int) -> np.ndarray:
    return windows(x, d).mean(axis=-1)


def ts_product(x: np.ndarray, d: int) -> np.ndarray:
    return _finite(windows(x, d).prod(axis=-1))


def ts_min(x: np.ndarray, d: int) -> np.ndarray:
    return windows(x, d).min(axis=-1)


def ts_max(x: np.ndarray, d: int) -> np.ndarray:
    return windows(x, d).max(axis=-1)


def _argext(x: np.ndarray, d: int, fn) -> np.ndarray:
    w = windows(x, d)
    bad = np.isnan(w).any(axis=-1)
    pos = fn(np.where(np.isnan(w), 0.0, w), axis=-1).astype(np.float64) + 1.0
    pos[bad] = np.nan
    return pos


def ts_argmax(x: np.ndarray, d: int) -> np.ndarray:
    return _argext(x, d, np.argmax)


def ts_argmin(x: np.ndarray, d: int) -> np.ndarray:
    return _argext(x, d, np.argmin)


def ts_rank(x: np.ndarray, d: int) -> np.ndarray:
    w = windows(x, d)
    today = w[..., -1:]
    less = (w < today).sum(axis=-1)
    equal = (w == today).sum(axis=-1)  # includes today itself
    out = (less + (equal + 1) / 2.0) / d
    out[np.isnan(w).any(axis=-1)] = np.nan
    return out


def _centered(x: np.ndarray, d: int) -> np.ndarray:
    w = windows(x, d)
    return w - w.mean(axis=-1, keepdims=True)


def stddev(x: np.ndarray, d: int) -> np.ndarray:
    if d < 2:
        return np.full_like(x, np.nan)
    c = _centered(x, d)
    return np.sqrt((c * c).sum(axis=-1) / (d - 1))


def covariance(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    if d < 2:
        return np.full_like(x, np.nan)
    return (_centered(x, d) * _centered(y, d)).sum(axis=-1) / (d - 1)


def correlation(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    if d < 2:
        return np.full_like(x, np.nan)
    cx, cy = _centered(x, d), _centered(y, d)
    sxx, syy = (cx * cx).sum(axis=-1), (cy * cy).sum(axis=-1)
    # A window that is constant up to rounding has no correlation, not a huge one.
    wx, wy = windows(x, d), windows(y, d)
    tiny = 1e-12
    flat = (sxx <= tiny * (np.abs(wx).max(axis=-1) ** 2) * d) | (syy <= tiny * (np.abs(wy).max(axis=-1) ** 2) * d)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (cx * cy).sum(axis=-1) / np.sqrt(sxx * syy)
    r = np.where(flat, np.nan, np.clip(r, -1.0, 1.0))
    return r


def decay_linear(x: np.ndarray, d: int) -> np.ndarray:
    weights = np.arange(1, d + 1, dtype=np.float64)  # oldest 1 ... today d
    return windows(x, d) @ (weights / weights.sum())


def rank(x: np.ndarray) -> np.ndarray:
    import pandas as pd  # only the cross-sectional rank needs it: average ties, NaN kept

    return pd.DataFrame(x).rank(axis=1, pct=True, method="average").to_numpy(dtype=np.float64)


def scale(x: np.ndarray, a: float = 1.0) -> np.ndarray:
    gross = np.nansum(np.abs(x), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finite(x * a / gross)


def signedpower(x, a):
    with np.errstate(invalid="ignore", over="ignore"):
        return _finite(np.sign(x) * np.power(np.abs(x), a))


def power(x, a):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _finite(np.power(x, a))


def log(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finite(np.log(np.where(np.asarray(x) > 0, x, np.nan)))


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
        names = {"x": "x", "y": "y", "d": "d", "a": "a", "g": "IndClass.industry"}
        args = [names.get(s.rstrip("?"), s) + ("=1" if s.endswith("?") else "") for s in self.signature]
        if args[:2] == ["x", "x"]:
            args[1] = "y"
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
        Op("sum", ts_sum, ("x", "d"), "time-series sum over the past d days"),
        Op("product", ts_product, ("x", "d"), "time-series product over the past d days"),
        Op("ts_mean", ts_mean, ("x", "d"), "time-series mean over the past d days"),
        Op("ts_min", ts_min, ("x", "d"), "time-series minimum over the past d days"),
        Op("ts_max", ts_max, ("x", "d"), "time-series maximum over the past d days"),
        Op("ts_argmin", ts_argmin, ("x", "d"), "day of the minimum in the window (1 = oldest, d = today)"),
        Op("ts_argmax", ts_argmax, ("x", "d"), "day of the maximum in the window (1 = oldest, d = today)"),
        Op("ts_rank", ts_rank, ("x", "d"), "today's percentile rank within the past d days"),
        Op("decay_linear", decay_linear, ("x", "d"), "linearly weighted moving average (today weighs d)"),
        Op("indneutralize", indneutralize, ("x", "g"), "demean x within each industry group, per date"),
        # min/max take a window when the second argument is a number (as in the paper),
        # otherwise they are element-wise; the compiler rewrites the windowed form to ts_min/ts_max.
        Op("min", np.fmin, ("x", "x"), "element-wise minimum, or ts_min(x, d) when d is a number"),
        Op("max", np.fmax, ("x", "x"), "element-wise maximum, or ts_max(x, d) when d is a number"),
    ]
}

# Spellings that models (and other papers) use for the same operators.
ALIASES: dict[str, str] = {
    "corr": "correlation", "ts_corr": "correlation", "ts_correlation": "correlation",
    "cov": "covariance", "ts_cov": "covariance", "ts_covariance": "covariance",
    "std": "stddev", "ts_std": "stddev", "ts_stddev": "stddev",
    "ts_sum": "sum", "ts_product": "product", "ts_delay": "delay", "ts_delta": "delta",
    "mean": "ts_mean", "sma": "ts_mean", "ts_decay_linear": "decay_linear", "decaylinear": "decay_linear",
    "signed_power": "signedpower", "ind_neutralize": "indneutralize", "neutralize": "indneutralize",
    "tsrank": "ts_rank", "tsmin": "ts_min", "tsmax": "ts_max", "tsargmax": "ts_argmax", "tsargmin": "ts_argmin",
}  # fmt: skip
