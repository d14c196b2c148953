"""The price panel an alpha runs on: dates x assets arrays, from a user's file or a seeded generator.

Users give a long table, one row per (date, ticker)::

    date,ticker,open,high,low,close,volume[,vwap,cap,sector,industry,subindustry]

as CSV or Parquet. Only ``date``, ``ticker`` and ``close`` are required to load (the
backtest needs close-to-close returns); an alpha that uses a column the file lacks
gets an error naming that column when it runs. ``vwap`` is derived as the typical
price ``(high + low + close) / 3`` when the file has none, and the panel records that
it did (``Panel.derived``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantgrid.errors import DataError

PRICE_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "cap")
GROUP_FIELDS = ("sector", "industry", "subindustry")
_ALIASES = {"symbol": "ticker", "asset": "ticker", "timestamp": "date", "time": "date", "datetime": "date",
            "adj_close": "close", "market_cap": "cap", "marketcap": "cap"}  # fmt: skip


@dataclass
class Panel:
    """Aligned ``(T, N)`` float arrays per field and int-coded group labels (-1 = unknown)."""

    dates: np.ndarray  # datetime64[D], increasing
    tickers: list[str]
    fields: dict[str, np.ndarray]
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)  # field -> how it was derived
    source: str = "memory"

    def __post_init__(self):
        shape = self.shape
        for name, arr in {**self.fields, **self.groups}.items():
            if arr.shape != shape:
                raise DataError(f"panel field {name!r} has shape {arr.shape}, expected {shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.dates), len(self.tickers))

    def forward_returns(self) -> np.ndarray:
        """``r[t, i]``: the return from the close of t to the close of t + 1 (NaN on the last date).

        This is the only place the backtest looks at the future, and it pairs it with
        a signal known at the close of t.
        """
        close = self.fields["close"]
        out = np.full_like(close, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:-1] = close[1:] / close[:-1] - 1.0
        return np.where(np.isfinite(out), out, np.nan)

    def head(self, n: int) -> Panel:
        """The first ``n`` dates: what the world looked like at date n - 1 (used to test for lookahead)."""
        return Panel(self.dates[:n], list(self.tickers), {k: v[:n] for k, v in self.fields.items()},
                     {k: v[:n] for k, v in self.groups.items()}, dict(self.derived), self.source)

    def to_frame(self):
        """The panel as a long pandas DataFrame (the same format :func:`load_panel` reads)."""
        import pandas as pd

        T, N = self.shape
        data = {"date": np.repeat(self.dates, N), "ticker": np.tile(np.array(self.tickers, dtype=object), T)}
        for name, arr in self.fields.items():
            if name not in self.derived:
                data[name] = arr.reshape(-1)
        for name, codes in self.groups.items():
            data[name] = np.array([f"{name[:3].upper()}{c:02d}" if c >= 0 else None for c in codes.reshape(-1)],
                                  dtype=object)
        return pd.DataFrame(data)


# ---------------------------------------------------------------- loading a user's file


def panel_from_frame(df, source: str = "frame") -> Panel:
    """Validate a long (date, ticker, fields...) DataFrame and pivot it to a :class:`Panel`."""
    import pandas as pd

    df = df.rename(columns={c: _ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in df.columns})
    missing = [c for c in ("date", "ticker", "close") if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}",
            hint="give a long table with columns date, ticker, open, high, low, close, volume "
            "(vwap, cap, sector, industry, subindustry optional)",
        )
    if df.empty:
        raise DataError(f"{source}: the price file has no rows", hint="give at least a few months of daily prices")
    try:
        if pd.api.types.is_integer_dtype(df["date"]):  # 20240131, not nanoseconds since 1970
            dates = pd.to_datetime(df["date"].astype(str), format="%Y%m%d")
        else:
            dates = pd.to_datetime(df["date"])
        if dates.dt.tz is not None:
            dates = dates.dt.tz_convert(None)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: column 'date' has values that are not dates ({exc})",
                        hint="use ISO dates such as 2024-01-31") from exc
    df = df.assign(date=dates.dt.normalize(), ticker=df["ticker"].astype(str))
    dup = df.duplicated(["date", "ticker"])
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(f"{source}: {int(dup.sum())} duplicate (date, ticker) rows, e.g. {row['date'].date()} {row['ticker']}",
                        hint="keep one row per ticker per date")
    numeric = [c for c in PRICE_FIELDS if c in df.columns]
    for c in numeric:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() & df[c].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{source}: column {c!r} has a non-numeric value {df[c].iloc[i]!r} (data row {i + 1})",
                            hint="prices and volumes must be numbers; leave a cell empty when there is no data")
        df[c] = values.where(np.isfinite(values))  # "inf" in a file is missing data, not a price
    nonpos = (df["close"] <= 0).sum()
    if nonpos:
        raise DataError(f"{source}: {int(nonpos)} row(s) have close <= 0",
                        hint="use prices, not returns, in the close column")
    dates_idx = np.sort(df["date"].unique())
    tickers = sorted(df["ticker"].unique())
    fields = {c: df.pivot(index="date", columns="ticker", values=c).reindex(index=dates_idx, columns=tickers)
              .to_numpy(dtype=np.float64) for c in numeric}
    groups = {}
    for g in GROUP_FIELDS:
        if g in df.columns:
            wide = df.pivot(index="date", columns="ticker", values=g).reindex(index=dates_idx, columns=tickers)
            codes, _ = pd.factorize(wide.to_numpy().reshape(-1), use_na_sentinel=True)
            groups[g] = codes.reshape(wide.shape).astype(np.int64)
    derived = {}
    if "vwap" not in fields and all(c in fields for c in ("high", "low", "close")):
        fields["vwap"] = (fields["high"] + fields["low"] + fields["close"]) / 3.0
        derived["vwap"] = "typical price (high + low + close) / 3; the file has no vwap column"
    return Panel(np.asarray(dates_idx, dtype="datetime64[D]"), [str(t) for t in tickers], fields, groups, derived, source)


def load_panel(path: str | Path) -> Panel:
    """Read a long-format CSV or Parquet price file into a :class:`Panel`."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"price file not found: {path}", hint="pass --prices with a CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
            df = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise DataError(f"unsupported price file type {suffix!r}: {path}", hint="use .csv or .parquet")
    except ImportError as exc:
        raise DataError(f"reading {path.name} needs a Parquet engine: {exc}", hint="pip install pyarrow") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"could not read {path}: {exc}", hint="check that the file is a valid CSV or Parquet table") from exc
    return panel_from_frame(df, source=str(path))


# ---------------------------------------------------------------- the synthetic panel


def synthetic_panel(n_dates: int = 500, n_assets: int = 50, seed: int = 0, reversal: float = 0.05) -> Panel:
    """A seeded, reproducible OHLCV panel for tests and the demo; never a substitute for real data.

    Close prices follow a geometric random walk with a market factor, a sector factor
    and idiosyncratic noise with per-asset volatility. ``reversal`` adds a small,
    known short-term mean reversion (tomorrow's idiosyncratic return leans against
    today's), so that a reversal alpha has a positive expected Sharpe and a useless
    one does not: the metrics then have something real to find. Volume is lognormal,
    persistent and rises with the size of the move. Open/high/low/vwap are consistent
    with close (low <= open, close, vwap <= high). Assets sit in 4 sectors, 8
    industries and 16 subindustries, nested.
    """
    if n_dates < 2 or n_assets < 2:
        raise DataError("a synthetic panel needs at least 2 dates and 2 assets")
    rng = np.random.default_rng(seed)
    T, N = n_dates, n_assets
    sub = rng.integers(0, 16, size=N)
    industry, sector = sub // 2, sub // 4
    vol = rng.uniform(0.01, 0.03, size=N)
    market = rng.normal(0.0003, 0.01, size=(T, 1))
    sector_f = rng.normal(0.0, 0.006, size=(T, 4))[:, sector]
    idio = rng.normal(0.0, 1.0, size=(T, N)) * vol
    for t in range(1, T):  # AR(1) on the idiosyncratic part: the planted reversal
        idio[t] -= reversal * idio[t - 1]
    ret = market + sector_f + idio
    ret[0] = 0.0
    close = 20.0 * rng.lognormal(1.0, 0.6, size=N) * np.exp(np.cumsum(np.log1p(ret), axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, 0.3, size=(T, N)) * vol)
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * np.exp(np.abs(rng.normal(0.0, 0.5, size=(T, N))) * vol)
    low = bottom * np.exp(-np.abs(rng.normal(0.0, 0.5, size=(T, N))) * vol)
    vwap = np.clip((high + low + close) / 3.0 * np.exp(rng.normal(0.0, 0.1, size=(T, N)) * vol), low, high)
    base_volume = rng.lognormal(13.0, 1.0, size=N)
    shock = np.zeros((T, N))
    noise = rng.normal(0.0, 0.3, size=(T, N))
    for t in range(1, T):  # persistent volume with spikes on big moves
        shock[t] = 0.7 * shock[t - 1] + noise[t]
    volume = np.round(base_volume * np.exp(shock + 8.0 * np.abs(ret - market)))
    shares = rng.lognormal(18.0, 1.0, size=N)
    dates = np.busday_offset(np.datetime64("2020-01-01"), np.arange(T), roll="forward")
    fields = {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "vwap": vwap,
              "cap": close * shares}
    tile = lambda g: np.tile(g.astype(np.int64), (T, 1))  # noqa: E731
    groups = {"sector": tile(sector), "industry": tile(industry), "subindustry": tile(sub)}
    return Panel(dates.astype("datetime64[D]"), [f"SYN{i:03d}" for i in range(N)], fields, groups,
                 source=f"synthetic(seed={seed}, dates={T}, assets={N})")
