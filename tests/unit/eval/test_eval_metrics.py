"""Generation metrics against hand-computed values (and BLEU against sacrebleu)."""

from __future__ import annotations

import math

import pytest

from quantgrid.data.types import Example
from quantgrid.errors import ConfigError, DataError
from quantgrid.eval import metrics as M
from quantgrid.eval.metrics import compute_metric, register_metric


def ex(completion: str, prompt: str = "q", context: str | None = None, **meta) -> Example:
    return Example(prompt, completion, context, meta)


def test_numbers_are_parsed_with_separators_currency_and_percent():
    assert M.numbers_in("Revenue $1,234.5m, up 12.5% (from 1,100); change -3 or −2; .5") == \
        [1234.5, 12.5, 1100.0, -3.0, -2.0, 0.5]
    assert M.numbers_in("Q3 and 10-K") == [10.0]  # "Q3" is a name, not a number
    assert M.numbers_in("") == []


def test_exact_match_text_and_numeric():
    items = [ex("12.5% growth", answer_value=12.5), ex("12.5%", answer_value=12.5), ex("Paris"),
             ex("The Paris!"), ex("1,234")]
    answers = ["Growth: from 100 to 112.5, i.e. 12.5%.",  # last number is the answer -> 1
               "about 12.8",  # 2.3% off, beyond the 1% tolerance -> 0
               "  paris. ",  # normalized -> 1
               "paris",  # articles and punctuation dropped -> 1
               "It is 1234.0"]  # bare-number reference parsed -> 1
    r = compute_metric("exact_match", items, answers)
    assert r.per_item == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert r.score == pytest.approx(4 / 5)
    assert compute_metric("exact_match", items[1:2], answers[1:2], rel_tol=0.05).score == 1.0
    assert compute_metric("exact_match", [ex("x", answer_value=3.0)], ["no number"]).score == 0.0


def test_rouge_l_hand_values():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 of 6 each way
    assert M.rouge_l_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # P = 2/2, R = 2/4 -> F = 2 * 1 * 0.5 / 1.5
    assert M.rouge_l_f1("a b", "a x b y") == pytest.approx(2 / 3)
    assert M.rouge_l_f1("", "a") == 0.0 and M.rouge_l_f1("x", "a") == 0.0
    r = compute_metric("rouge_l", [ex("the cat is on the mat"), ex("a x b y")], ["the cat sat on the mat", "a b"])
    assert r.score == pytest.approx((5 / 6 + 2 / 3) / 2)


def test_rouge_l_agrees_with_rouge_score():
    from rouge_score import rouge_scorer as rouge_score  # a dev dependency: the reference implementation
    scorer = rouge_score.RougeScorer(["rougeL"])
    pairs = [("The firm's P/E is 15.2, above the sector's 12.", "The P/E ratio is 15.2 versus 12 for the sector."),
             ("Net income rose.", "Net income fell sharply in 2023.")]
    for pred, ref in pairs:
        assert M.rouge_l_f1(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)


def test_bleu_matches_sacrebleu_and_hand_value():
    import sacrebleu

    refs = ["The current ratio is 2.5, so the firm can cover short-term debts.",
            "Gross margin = (revenue - COGS) / revenue = 40%.", "a b c d f"]
    hyps = ["The current ratio is 2.5 so the firm covers its short-term debts.",
            "Gross margin is 40%.", "a b c d e"]
    r = compute_metric("bleu", [ex(x) for x in refs], hyps)
    assert r.score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    # by hand: precisions 4/5, 3/4, 2/3, 1/2 and no brevity penalty -> (0.2) ** 0.25
    one = compute_metric("bleu", [ex("a b c d f")], ["a b c d e"])
    assert one.score == pytest.approx(100 * 0.2 ** 0.25, abs=1e-6)
    assert one.higher_is_better


def test_factuality_checks_numbers_against_context_and_is_na_without_one():
    ctx = "Revenue was $1,200 and costs were 800."
    items = [ex("x", context=ctx), ex("x", context=ctx), ex("x", context=ctx), ex("x")]
    answers = ["Profit is 400.", "Revenue was 1200 against costs of $800.", "It made a profit.", "999"]
    r = compute_metric("factuality", items, answers)
    assert r.per_item == [0.0, 1.0, 1.0, None]  # 400 is not in the context; no context -> skipped
    assert r.score == pytest.approx(2 / 3) and r.n_scored == 3
    na = compute_metric("factuality", [ex("x"), ex("y")], ["1", "2"])
    assert na.score is None and "no benchmark item has a context" in na.note and na.display == "n/a"


def test_citation_and_risk_note_rates_over_items_that_expect_them():
    items = [ex("Revenue rose.", citations=[{"source": "10-K"}]), ex("Revenue rose [1]."), ex("plain")]
    answers = ["Revenue rose (Source: 10-K filing).", "Revenue rose.", "[2] anything"]
    r = compute_metric("citation_rate", items, answers)
    assert r.per_item == [1.0, 0.0, None] and r.score == 0.5
    items = [ex("Buy.", risk_note="Not investment advice."), ex("Hold. Past performance is no guarantee."),
             ex("The risk-free rate is 4%.")]
    answers = ["Buy. This is not financial advice.", "Hold.", "whatever"]
    r = compute_metric("risk_note_rate", items, answers)
    assert r.per_item == [1.0, 0.0, None] and r.score == 0.5
    assert compute_metric("citation_rate", [ex("a")], ["[1]"]).score is None


def test_code_compile_rate_compiles_but_never_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    ref = "Here:\n```python\nx = 1\n```"
    items = [ex(ref), ex(ref), ex(ref), ex(ref), ex("```ts\nconst x = 1;\n```")]
    answers = [f"```python\nopen({str(marker)!r}, 'w').write('x')\n```",  # valid: compiles, must not run
               "```python\ndef f(:\n  pass\n```",  # syntax error
               "no code at all",
               "```\nimport os\nprint(os.sep)\n```\nand\n```py\ny = [1, 2\n```",  # second block broken
               "```python\nbroken(\n```"]  # TypeScript reference: not scored
    r = compute_metric("code_compile_rate", items, answers)
    assert r.per_item == [1.0, 0.0, 0.0, 0.0, None] and r.score == 0.25
    assert not marker.exists()
    # a bare reference counts as code when the item says it is Python
    bare = compute_metric("code_compile_rate", [ex("def f():\n    return 1", language="python")],
                          ["def g():\n    return 2"])
    assert bare.score == 1.0
    assert compute_metric("code_compile_rate", [ex("just words")], ["x"]).score is None


def test_pattern_compliance_benchmark_item_and_qi_patterns():
    good_ts = ("import { Result, success, failure, match } from '@qi/base';\n"
               "const f = (p: number): Result<number> => p > 0 ? success(p) : failure(err);")
    bad_ts = good_ts + "\nif (p < 0) throw new Error('bad');"
    items = [ex("ref"), ex("ref"), ex("ref", patterns={"must": [r"\bPrice\b"]})]
    r = compute_metric("pattern_compliance", items, [good_ts, bad_ts, good_ts], patterns="qi")
    assert r.per_item == [1.0, 0.0, 0.0]  # the third item also needs "Price"
    assert r.score == pytest.approx(1 / 3)
    # item patterns only; a bare list means "must"
    items = [ex("r", patterns=[r"^SELECT\b"]), ex("r", patterns={"must_not": [r"DROP TABLE"]}), ex("r")]
    r = compute_metric("pattern_compliance", items, ["SELECT 1", "DROP TABLE x", "anything"])
    assert r.per_item == [1.0, 0.0, None] and r.score == 0.5
    assert compute_metric("pattern_compliance", [ex("r")], ["a"]).score is None
    with pytest.raises(DataError, match="bad regular expression"):
        compute_metric("pattern_compliance", [ex("r", patterns=["(unclosed"])], ["a"])
    with pytest.raises(ConfigError, match="unknown pattern preset"):
        compute_metric("pattern_compliance", [ex("r")], ["a"], patterns="nope")


def test_registering_a_metric_is_one_line_and_options_are_filtered():
    calls = {}

    @register_metric("_test_prices", "uses a price panel")
    def prices_metric(items, answers, *, prices=None):
        calls["prices"] = prices
        return float(len(answers)) if prices is not None else None

    try:
        r = compute_metric("_test_prices", [ex("a"), ex("b")], ["x", "y"], prices="PANEL", rel_tol=0.5)
        assert r.score == 2.0 and r.name == "_test_prices" and calls["prices"] == "PANEL"  # rel_tol not passed
        assert compute_metric("_test_prices", [ex("a")], ["x"]).score is None
        assert "_test_prices" in M.metric_names()
    finally:
        M.METRICS.pop("_test_prices")
    with pytest.raises(ConfigError, match="unknown metric"):
        compute_metric("_test_prices", [ex("a")], ["x"])


def test_answer_quality_flags_empty_repeated_and_duplicated():
    q = M.answer_quality(["", "........................", "the the the the the the", "A fine answer.",
                          "A fine answer.", "The NPV is $1,000,000."])
    assert q["empty"] == pytest.approx(1 / 6)
    assert q["repetitive"] == pytest.approx(2 / 6)
    assert q["duplicated"] == pytest.approx(1 / 6)
    assert not math.isnan(M.answer_quality([])["empty"])
