"""Loading a user's long-format price file, and the seeded synthetic panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantgrid.errors import DataError
from quantgrid.eval.alpha import compile_alpha, load_panel, panel_from_frame, synthetic_panel


def test_synthetic_panel_is_seeded_and_consistent():
    a, b, c = synthetic_panel(80, 7, seed=3), synthetic_panel(80, 7, seed=3), synthetic_panel(80, 7, seed=4)
    assert a.shape == (80, 7) and len(set(a.tickers)) == 7
    for f in ("open", "high", "low", "close", "volume", "vwap", "cap"):
        np.testing.assert_array_equal(a.fields[f], b.fields[f])
    assert not np.allclose(a.fields["close"], c.fields["close"])
    f = a.fields
    assert (f["low"] <= np.minimum(f["open"], f["close"])).all() and (f["high"] >= np.maximum(f["open"], f["close"])).all()
    assert ((f["low"] <= f["vwap"]) & (f["vwap"] <= f["high"])).all()
    assert (f["volume"] > 0).all() and (f["close"] > 0).all()
    assert (np.diff(a.dates).astype(int) > 0).all()
    # nested groups: every subindustry sits in one industry, every industry in one sector
    g = a.groups
    for fine, coarse in (("subindustry", "industry"), ("industry", "sector")):
        pairs = set(zip(g[fine][0], g[coarse][0], strict=True))
        assert len({p[0] for p in pairs}) == len(pairs)


def test_csv_round_trip(tmp_path):
    syn = synthetic_panel(40, 5, seed=2)
    path = tmp_path / "prices.csv"
    syn.to_frame().to_csv(path, index=False)
    back = load_panel(path)
    assert back.shape == syn.shape and back.tickers == syn.tickers
    np.testing.assert_array_equal(back.dates, syn.dates)
    for f in syn.fields:
        np.testing.assert_allclose(back.fields[f], syn.fields[f], rtol=1e-12)
    for g in syn.groups:  # labels become new codes, the grouping is the same
        assert len(set(zip(back.groups[g][0], syn.groups[g][0], strict=True))) == len(set(syn.groups[g][0]))
    expr = compile_alpha("indneutralize(rank(-1 * delta(close, 3)), IndClass.industry)")
    np.testing.assert_allclose(expr.evaluate(back), expr.evaluate(syn), equal_nan=True)


def test_parquet_and_unsorted_rows_with_gaps(tmp_path):
    df = pd.DataFrame({
        "Date": ["2024-01-03", "2024-01-02", "2024-01-02", "2024-01-04"],
        "Symbol": ["AAA", "BBB", "AAA", "AAA"],
        "Close": [11.0, 20.0, 10.0, 12.0],
    })
    path = tmp_path / "p.parquet"
    df.to_parquet(path)
    p = load_panel(path)
    assert p.tickers == ["AAA", "BBB"] and p.shape == (3, 2)
    np.testing.assert_array_equal(p.fields["close"], [[10, 20], [11, np.nan], [12, np.nan]])
    assert "vwap" not in p.fields and p.groups == {}


def test_integer_and_timezone_dates(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("date,ticker,close\n20240102,A,10\n20240103,A,11\n")
    np.testing.assert_array_equal(load_panel(path).dates, np.array(["2024-01-02", "2024-01-03"], dtype="datetime64[D]"))
    df = pd.DataFrame({"date": ["2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00"], "ticker": "A",
                       "close": [1.0, 2.0]})
    assert panel_from_frame(df).shape == (2, 1)


def test_infinite_values_are_missing(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("date,ticker,close,volume\n2024-01-02,A,10,inf\n2024-01-02,B,inf,5\n")
    p = load_panel(path)
    np.testing.assert_array_equal(p.fields["close"], [[10, np.nan]])
    np.testing.assert_array_equal(p.fields["volume"], [[np.nan, 5]])


def test_vwap_is_derived_and_says_so():
    df = pd.DataFrame({"date": ["2024-01-02"] * 2, "ticker": ["A", "B"], "high": [12.0, 6], "low": [9.0, 3],
                       "close": [9.0, 6]})
    p = panel_from_frame(df)
    np.testing.assert_allclose(p.fields["vwap"], [[10.0, 5.0]])
    assert "typical price" in p.derived["vwap"]


@pytest.mark.parametrize(
    "frame, words",
    [
        (pd.DataFrame({"date": ["2024-01-02"], "ticker": ["A"]}), "missing required column(s) close"),
        (pd.DataFrame({"ticker": ["A"], "close": [1.0]}), "missing required column(s) date"),
        (pd.DataFrame({"date": [], "ticker": [], "close": []}), "no rows"),
        (pd.DataFrame({"date": ["2024-01-02"] * 2, "ticker": ["A", "A"], "close": [1.0, 2.0]}), "duplicate"),
        (pd.DataFrame({"date": ["2024-01-02"], "ticker": ["A"], "close": ["n/a"]}), "non-numeric value 'n/a'"),
        (pd.DataFrame({"date": ["2024-01-02"], "ticker": ["A"], "close": [-1.0]}), "close <= 0"),
        (pd.DataFrame({"date": ["not a date"], "ticker": ["A"], "close": [1.0]}), "not dates"),
    ],
)
def test_bad_price_tables(frame, words):
    with pytest.raises(DataError) as err:
        panel_from_frame(frame, source="prices.csv")
    assert words in err.value.message and "prices.csv" in err.value.message
    assert err.value.hint


def test_bad_price_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_panel(tmp_path / "missing.csv")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported price file type"):
        load_panel(tmp_path / "p.xlsx")
    (tmp_path / "p.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="could not read"):
        load_panel(tmp_path / "p.parquet")
