"""The shipped alpha benchmark, and the metrics registered in quantgrid.eval.metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgrid.data.types import Example
from quantgrid.eval.alpha import compile_alpha, score_alphas, synthetic_panel
from quantgrid.eval.alpha.metric import DetailedResult, default_panel, is_alpha_item
from quantgrid.eval.metrics import compute_metric, compute_metrics, get_metric

BENCH = Path(__file__).parents[4] / "src/quantgrid/data/builtin/alpha-bench.jsonl"


def bench_items() -> list[Example]:
    out = []
    for line in BENCH.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out.append(Example(rec.pop("question"), rec.pop("answer"), None, rec))
    return out


def test_benchmark_shape():
    items = bench_items()
    assert len(items) >= 50
    assert len({ex.meta["id"] for ex in items}) == len(items)
    assert len({ex.prompt for ex in items}) == len(items)
    assert len({compile_alpha(ex.completion).canonical for ex in items}) == len(items)  # no two the same alpha
    assert all(ex.meta["task"] == "formulaic_alpha" for ex in items)


def test_every_reference_parses_and_backtests_on_the_synthetic_panel():
    items = bench_items()
    rep = score_alphas([ex.completion for ex in items], default_panel())
    failures = [(it["expression"], it["error"]) for it in rep["items"] if not it["backtested"]]
    assert failures == []
    assert rep["compile_rate"] == 1.0 and rep["backtest_success"] == 1.0
    # the benchmark exercises the language: most operators and every kind of syntax appear
    text = " ".join(ex.completion for ex in items)
    for needle in ("correlation(", "covariance(", "ts_rank(", "ts_argmax(", "ts_argmin(", "decay_linear(",
                   "indneutralize(", "signedpower(", "scale(", "product(", "stddev(", "ts_min(", "ts_max(",
                   "delay(", "delta(", "sum(", "log(", "sign(", "abs(", "?", "&&", "||", "^", "!=", "<="):
        assert needle in text, needle


def test_registered_as_a_builtin_dataset():
    from quantgrid.data.sets import builtin_sets, load_builtin

    assert "alpha-bench" in builtin_sets()
    loaded = load_builtin("alpha-bench")
    assert [ex.completion for ex in loaded] == [ex.completion for ex in bench_items()]


@pytest.fixture(scope="module")
def small_panel():
    return synthetic_panel(n_dates=200, n_assets=20, seed=7)


def test_alpha_metrics_through_the_registry(small_panel):
    items = bench_items()[:6] + [Example("What is the P/E of a stock at $30 with EPS $2?", "15")]
    answers = [ex.completion for ex in items[:3]] + ["rank(close", "Alpha #5: rank(open) * 0", "rank(-1 * returns)",
                                                     "15"]
    bt = compute_metric("alpha_backtest", items, answers, prices=small_panel, patterns=None)
    assert isinstance(bt, DetailedResult)
    assert bt.per_item == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, None]  # the P/E item is not an alpha item
    assert bt.score == pytest.approx(4 / 6)
    d = bt.to_dict()
    assert d["score"] == pytest.approx(4 / 6) and d["n_scored"] == 6
    assert d["alpha"]["compile_rate"] == pytest.approx(5 / 6) and d["alpha"]["backtest_success"] == pytest.approx(4 / 6)
    assert "synthetic(seed=7" in d["alpha"]["panel"]
    cr = compute_metric("alpha_compile_rate", items, answers)
    assert cr.score == pytest.approx(5 / 6) and cr.per_item[3] == 0.0 and cr.per_item[6] is None
    sh = compute_metric("alpha_sharpe", items, answers, prices=small_panel)
    ran = [s for s in sh.per_item if s is not None]
    assert len(ran) == 4 and sh.score == pytest.approx(sum(ran) / 4)
    json.dumps({k: v.to_dict() for k, v in compute_metrics(["alpha_backtest", "alpha_sharpe"], items, answers,
                                                           prices=small_panel).items()})


def test_alpha_metrics_read_a_price_file(tmp_path, small_panel):
    path = tmp_path / "prices.csv"
    small_panel.to_frame().to_csv(path, index=False)
    items = bench_items()[:3]
    res = compute_metric("alpha_backtest", items, [ex.completion for ex in items], prices=str(path))
    assert res.score == 1.0 and res.to_dict()["alpha"]["panel"] == str(path)


def test_alpha_metrics_are_na_without_alpha_items():
    items = [Example("What is a bond?", "A loan to an issuer."), Example("P/E of 30/2?", "15")]
    for name in ("alpha_backtest", "alpha_compile_rate", "alpha_sharpe"):
        res = compute_metric(name, items, ["a loan", "15"])
        assert res.score is None and res.display == "n/a" and "formulaic alpha" in res.note


def test_unmarked_items_count_as_alphas_when_the_reference_is_one():
    assert is_alpha_item(Example("Write a reversal alpha", "Alpha #3: rank(-1 * delta(close, 3))"))
    assert not is_alpha_item(Example("P/E?", "15"))  # a number is not an alpha over price data
    assert not is_alpha_item(Example("Define beta", "Beta measures sensitivity to the market."))
    assert not is_alpha_item(Example("x", "rank(close)", meta={"task": "qa"}))


STRATEGY = """class Demo(QCAlgorithm):
    def Initialize(self):
        self.SetCash(1000)
    def OnData(self, data):
        pass
"""


def test_strategy_structure_metric():
    items = [Example("Write a buy-and-hold SPY strategy", STRATEGY)] * 3 + [Example("P/E?", "15")]
    answers = [f"```python\n{STRATEGY}```", STRATEGY.replace("OnData", "Tick"), "def (", "15"]
    res = compute_metric("strategy_structure", items, answers)
    assert res.per_item == [1.0, pytest.approx(2 / 3), 0.0, None]
    assert res.score == pytest.approx((1 + 2 / 3) / 3)
    assert res.to_dict()["strategy"]["structure_rate"] == pytest.approx(1 / 3)
    assert compute_metric("strategy_structure", items[3:], ["15"]).score is None


def test_quantconnect_pattern_preset_for_pattern_compliance():
    get_metric("pattern_compliance")  # loads the plugins
    items = [Example("Write a strategy", STRATEGY)] * 2
    res = compute_metric("pattern_compliance", items, [STRATEGY, "print('hi')"], patterns="quantconnect")
    assert res.per_item == [1.0, 0.0]


def test_benchmark_does_not_leak_into_the_training_set():
    from quantgrid.data.sets import load_builtin
    from quantgrid.data.split import find_leakage
    from quantgrid.errors import EvalError
    from quantgrid.eval.alpha import extract_expression

    train, bench = load_builtin("finance-train"), bench_items()
    assert find_leakage(train, bench).overlaps == []  # no exact or near-duplicate text
    trained = set()
    for ex in train:  # nor the same alpha written differently
        try:
            trained.add(compile_alpha(extract_expression(ex.completion)).canonical)
        except EvalError:
            pass
    assert trained, "the training set's formulaic alphas should be found"
    assert not [ex.completion for ex in bench if compile_alpha(ex.completion).canonical in trained]
