"""The alpha metrics inside a real `run_eval` on the tiny base: results.json carries their breakdown.

Marked slow only because of the session's tiny-base build (the test itself takes seconds):
the rest of this folder needs no model.
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_run_eval_scores_generated_alphas_on_a_price_file(tiny_base, tmp_path):
    from quantgrid.eval.alpha import synthetic_panel
    from quantgrid.eval.harness import EvalConfig, run_eval

    prices = tmp_path / "prices.csv"
    synthetic_panel(n_dates=120, n_assets=10, seed=2).to_frame().to_csv(prices, index=False)
    cfg = EvalConfig(benchmark="builtin:alpha-bench", base_model=tiny_base, limit=3, ood=None, max_new_tokens=8,
                     metrics=["alpha_backtest", "alpha_compile_rate", "alpha_sharpe", "strategy_structure"],
                     primary_metric="alpha_backtest", output=tmp_path / "results.json", device="cpu")
    run_eval(cfg, metric_options={"prices": str(prices)})
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metric"] == "alpha_backtest" and results["n_examples"] == 3
    block = results["metrics"]["alpha_backtest"]["base"]
    # an untrained 2-layer model writes no working alpha; what matters is that it was scored on the file
    assert block["n_scored"] == 3 and 0.0 <= block["score"] <= 1.0
    assert block["alpha"]["panel"] == str(prices) and block["alpha"]["n_items"] == 3
    assert results["base_model_score"] == pytest.approx(block["score"])
    assert results["metrics"]["alpha_compile_rate"]["base"]["n_scored"] == 3
    assert results["metrics"]["strategy_structure"]["base"]["score"] is None  # no strategy items: n/a
