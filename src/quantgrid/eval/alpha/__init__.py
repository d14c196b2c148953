"""Formulaic alphas: the "101 Formulaic Alphas" language, evaluated safely over a price panel.

    >>> from quantgrid.eval.alpha import compile_alpha, synthetic_panel, score_alphas
    >>> panel = synthetic_panel(seed=0)
    >>> signal = compile_alpha("rank(-delta(close, 5))").evaluate(panel)   # (dates, assets)
    >>> report = score_alphas(["rank(-delta(close, 5))", "rank(clse)"], panel)
    >>> report["compile_rate"]
    0.5

Expressions are parsed by a real grammar (:mod:`.grammar`) and evaluated by
vectorized numpy kernels (:mod:`.operators`); nothing is handed to Python's eval.
Importing the package registers the ``alpha_backtest``, ``alpha_compile_rate``,
``alpha_sharpe`` and ``strategy_structure`` metrics (:mod:`.metric`).
"""

from . import metric
from .backtest import BacktestResult, backtest, extract_expression, score_alphas, weights
from .expression import Alpha, check_panel, compile_alpha
from .grammar import parse, unparse
from .operators import ALIASES, OPS
from .panel import Panel, load_panel, panel_from_frame, synthetic_panel

__all__ = [
    "ALIASES", "OPS", "Alpha", "BacktestResult", "Panel", "backtest", "check_panel", "compile_alpha",
    "extract_expression", "load_panel", "metric", "panel_from_frame", "parse", "score_alphas",
    "synthetic_panel", "unparse", "weights",
]
