"""`quantgrid alpha ...`: real commands through the root app, errors as one line plus a hint."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from quantgrid.cli import app


def run(*args: str):
    return CliRunner().invoke(app, ["alpha", *args])


def test_check_prints_canonical_form_and_needs():
    res = run("check", "-1 * ts_rank(close, 10)", "indneutralize(rank(vwap), IndClass.industry)")
    assert res.exit_code == 0, res.output
    assert "((-1) * ts_rank(close, 10))" in res.output and "needs 9 past date(s)" in res.output
    assert "IndClass.industry" in res.output


def test_check_error_is_one_line_and_a_hint():
    res = run("check", "corelation(close, volume, 5)")
    assert res.exit_code == 1
    assert "unknown operator 'corelation'" in res.output and "did you mean correlation" in res.output
    assert "Traceback" not in res.output


def test_synth_then_backtest_on_the_file(tmp_path):
    path = tmp_path / "prices.csv"
    res = run("synth", str(path), "--dates", "120", "--assets", "8", "--seed", "3")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(path)
    assert len(df) == 120 * 8 and {"date", "ticker", "open", "close", "volume", "industry"} <= set(df.columns)
    res = run("backtest", "rank(-1 * returns)", "rank(nope)", "--prices", str(path), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["panel"] == str(path) and report["compile_rate"] == 0.5 and report["backtest_success"] == 0.5
    assert report["items"][0]["days"] > 90


def test_score_reads_jsonl_and_text(tmp_path):
    jl = tmp_path / "answers.jsonl"
    jl.write_text('{"answer": "rank(-1 * delta(close, 5))"}\n{"answer": "Alpha: rank(volume"}\n')
    res = run("score", str(jl))
    assert res.exit_code == 0, res.output
    assert "compile rate 50%" in res.output and "backtest success 50%" in res.output
    txt = tmp_path / "answers.txt"
    txt.write_text("rank(open)\n\nrank(close)\n")
    assert "compile rate 100%" in run("score", str(txt)).output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "rank(open)"}\n')
    res = run("score", str(bad))
    assert res.exit_code == 1 and "bad.jsonl:1" in res.output and "'answer'" in res.output


def test_bad_inputs(tmp_path):
    res = run("backtest", "rank(close)", "--prices", str(tmp_path / "missing.csv"))
    assert res.exit_code == 1 and "price file not found" in res.output
    res = run("synth", str(tmp_path / "p.xlsx"))
    assert res.exit_code == 2 and ".csv or .parquet" in res.output
    assert not (tmp_path / "p.xlsx").exists()
    res = run("backtest", "rank(close)", "--method", "best")
    assert res.exit_code == 2 and "portfolio method" in res.output


def test_ops_lists_every_operator():
    from quantgrid.eval.alpha import OPS

    res = run("ops")
    assert res.exit_code == 0
    for name in OPS:
        assert f"{name}(" in res.output
