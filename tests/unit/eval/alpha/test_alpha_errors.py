"""Bad alphas and bad data each get one clear EvalError with a hint."""

from __future__ import annotations

import numpy as np
import pytest

from quantgrid.errors import EvalError
from quantgrid.eval.alpha import Panel, compile_alpha, synthetic_panel


def err(expr: str, panel: Panel | None = None) -> EvalError:
    with pytest.raises(EvalError) as info:
        alpha = compile_alpha(expr)
        if panel is not None:
            alpha.evaluate(panel)
    assert info.value.hint, "every error says what to do next"
    return info.value


def test_unknown_operator_lists_close_matches():
    e = err("corelation(close, volume, 5)")
    assert "unknown operator 'corelation'" in e.message and "position 0" in e.message
    assert "did you mean correlation" in e.hint


def test_unknown_operator_without_a_near_match_lists_the_operators():
    e = err("rank(frobnicate(close))")
    assert "position 5" in e.message
    assert "operators:" in e.hint and "ts_rank" in e.hint


def test_unknown_field_suggests_the_right_one():
    e = err("rank(clsoe)")
    assert "unknown field 'clsoe'" in e.message and "close" in e.hint


@pytest.mark.parametrize(
    "expr, words",
    [
        ("delta(close)", "delta() takes 2 argument(s) but got 1"),
        ("rank(close, 5)", "rank() takes 1 argument(s) but got 2"),
        ("correlation(close, volume)", "takes 3 argument(s) but got 2"),
        ("scale(close, 1, 2)", "takes 1 to 2 argument(s) but got 3"),
    ],
)
def test_wrong_arity_shows_the_usage(expr, words):
    e = err(expr)
    assert words in e.message
    assert "usage:" in e.hint


def test_window_must_be_a_number():
    e = err("ts_rank(close, volume)")
    assert "window" in e.message and "position 15" in e.message


@pytest.mark.parametrize("expr", ["delay(close, -1)", "delta(close, 0)", "sum(close, 0.5)"])
def test_no_window_reaches_into_the_future(expr):
    e = err(expr)
    assert "not a positive number of days" in e.message
    assert "future" in e.hint


def test_groups_only_go_into_indneutralize():
    assert "group label" in err("rank(IndClass.industry)").message
    assert "not an industry group" in err("indneutralize(close, volume)").message
    assert "must be a name" in err("indneutralize(close, rank(volume))").message


def _panel(fields: dict, T: int = 30) -> Panel:
    rng = np.random.default_rng(0)
    data = {f: rng.uniform(1, 2, size=(T, 3)) for f in fields}
    return Panel(np.arange(T).astype("datetime64[D]"), ["A", "B", "C"], data)


def test_missing_price_column_is_named():
    p = _panel(["close"])
    e = err("rank(volume / adv20)", p)
    # adv20 is dollar volume: it needs the volume and the vwap (derived from high/low/close)
    assert "'adv20'" in e.message and "no volume or vwap column" in e.message
    assert "add a 'volume' column" in e.hint
    e = err("rank(open)", p)
    assert "no open column" in e.message


def test_missing_group_column_is_named():
    e = err("indneutralize(close, IndClass.sector)", _panel(["close"]))
    assert "IndClass.sector" in e.message and "'sector'" in e.hint


def test_panel_too_short_for_the_windows():
    p = _panel(["close"], T=30)
    assert compile_alpha("ts_rank(delta(close, 10), 20)").lookback == 29
    compile_alpha("ts_rank(delta(close, 10), 20)").evaluate(p)  # 29 past rows + today: just fits
    e = err("ts_rank(delta(close, 10), 21)", p)
    assert "too short" in e.message and "need 30 past dates" in e.message and "has 30" in e.message
    assert "longer price history" in e.hint


def test_lookback_adds_nested_windows():
    assert compile_alpha("close").lookback == 0
    assert compile_alpha("returns").lookback == 1
    assert compile_alpha("adv20").lookback == 19
    assert compile_alpha("delay(close, 5)").lookback == 5
    assert compile_alpha("correlation(rank(delta(log(volume), 1)), rank(close), 6)").lookback == 6
    assert compile_alpha("sum(close, 3) + delay(close, 10)").lookback == 10


def test_evaluation_never_uses_python_eval():
    # a Python expression is not an alpha: no attribute access, no calls into Python
    for evil in ['__import__("os").system("true")', "close.__class__", "open('x')"]:
        with pytest.raises(EvalError):
            compile_alpha(evil).evaluate(synthetic_panel(60, 5))


@pytest.mark.parametrize(
    "expr, words",
    [
        ("(" * 3000 + "close" + ")" * 3000, "nested too deeply"),
        ("rank(" * 400 + "close" + ")" * 400, "nested too deeply"),
        ("close + " * 2000 + "1", "characters long"),
        ("sum(close, 1e999)", "longer than 10000 days"),
        ("ts_rank(close, 50000)", "longer than 10000 days"),
        ("rank(adv0)", "an average over 0 days"),
        ("rank(adv99999999)", "an average over 99999999 days"),
    ],
)
def test_hostile_input_is_an_error_not_a_crash(expr, words):
    with pytest.raises(EvalError, match=words):
        compile_alpha(expr)
