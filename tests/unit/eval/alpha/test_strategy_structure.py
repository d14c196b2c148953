"""QuantConnect strategy structure checks: ast only, never executed."""

from __future__ import annotations

import re

from quantgrid.eval.strategy import STRATEGY_PATTERNS, check_strategy, extract_code, score_strategies

GOOD = '''
from AlgorithmImports import *

class MeanReversion(QCAlgorithm):
    def Initialize(self):
        self.SetStartDate(2020, 1, 1)
        self.SetCash(100000)
        self.spy = self.AddEquity("SPY", Resolution.Daily).Symbol

    def OnData(self, data):
        if not self.Portfolio.Invested:
            self.SetHoldings(self.spy, 1)
'''

PEP8 = '''
class Momentum(QCAlgorithm):
    def initialize(self):
        self.set_cash(50_000)
    def on_data(self, slice):
        pass
'''


def test_a_complete_strategy_passes():
    res = check_strategy(GOOD)
    assert res.parses and res.ok and res.score == 1.0 and res.class_name == "MeanReversion"
    assert res.checks == {"algorithm_class": True, "initialize": True, "on_data": True,
                          "sets_start_date": True, "sets_cash": True, "sets_security": True}


def test_pep8_names_count_and_soft_checks_are_reported():
    res = check_strategy(PEP8)
    assert res.ok and res.score == 1.0
    assert res.checks["sets_cash"] and not res.checks["sets_start_date"] and not res.checks["sets_security"]


def test_missing_pieces_lower_the_score():
    no_ondata = GOOD.replace("def OnData", "def on_tick")
    assert check_strategy(no_ondata).score == 2 / 3 and not check_strategy(no_ondata).ok
    not_qc = GOOD.replace("(QCAlgorithm)", "(object)")
    res = check_strategy(not_qc)
    assert res.checks["algorithm_class"] is False and res.score == 0.0
    # Initialize outside the algorithm class does not count
    loose = "def Initialize(self):\n    pass\nclass A(QCAlgorithm):\n    def OnData(self, d):\n        pass\n"
    assert check_strategy(loose).checks == {"algorithm_class": True, "initialize": False, "on_data": True,
                                            "sets_start_date": False, "sets_cash": False, "sets_security": False}


def test_qualified_base_class():
    assert check_strategy("import AlgorithmImports as ai\nclass A(ai.QCAlgorithm):\n"
                          "    def Initialize(self): pass\n    def OnData(self, d): pass\n").ok


def test_syntax_errors_are_reported_with_the_line():
    res = check_strategy("class A(QCAlgorithm):\n    def Initialize(self)\n        pass\n")
    assert not res.parses and res.score == 0 and "line 2" in res.error


def test_code_is_taken_from_a_fence():
    answer = f"Here is the strategy:\n```python\n{GOOD}```\nIt buys SPY."
    assert extract_code(answer).strip() == GOOD.strip()
    assert check_strategy(answer).ok


def test_dangerous_code_is_flagged_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    code = GOOD + f"\nimport os\nos.system('touch {marker}')\nopen('{marker}', 'w').write('x')\nexec('1')\n"
    res = check_strategy(code)
    assert not marker.exists()  # parsed, not executed
    assert res.score == 1.0 and not res.ok
    assert any("imports os" in w for w in res.warnings) and any("exec()" in w for w in res.warnings)
    assert any("system()" in w for w in res.warnings) and any("open()" in w for w in res.warnings)


def test_score_strategies_rates():
    rep = score_strategies([GOOD, PEP8, "class A(QCAlgorithm):\n  def Initialize(self): pass\n", "def (:", ""])
    assert rep["n"] == 5
    assert rep["compile_rate"] == 4 / 5  # the empty answer parses (as an empty module)
    assert rep["structure_rate"] == 2 / 5
    assert rep["mean_score"] == (1 + 1 + 2 / 3 + 0 + 0) / 5


def test_patterns_agree_with_the_ast_check():
    for code, expected in ((GOOD, True), (PEP8, True), (GOOD.replace("QCAlgorithm", "Base"), False)):
        must = all(re.search(p, code) for p in STRATEGY_PATTERNS["must"])
        must_not = any(re.search(p, code) for p in STRATEGY_PATTERNS["must_not"])
        assert (must and not must_not) == expected == check_strategy(code).ok
