"""Built-in finance data: reproducible, right, and shipped as generated."""

from __future__ import annotations

import math
import re
from collections import Counter
from statistics import NormalDist

import pytest

from quantgrid.data import builtin_sets, finance, load_examples
from quantgrid.data.sets import BUILTIN_DIR, generate_shipped, render_jsonl
from quantgrid.data.split import find_leakage
from quantgrid.data.templates import TEMPLATES
from quantgrid.errors import DataError

NUM = r"-?\$?[\d,]+(?:\.\d+)?"


def nums(text: str) -> list[float]:
    """Every number in ``text`` in order ($ and commas dropped, % kept as the percent value)."""
    return [float(x.replace("$", "").replace(",", "")) for x in re.findall(r"-?\$?\d[\d,]*(?:\.\d+)?", text)]


@pytest.fixture(scope="module")
def items():
    return finance.generate(len(TEMPLATES) * 12, seed=123)


def test_same_seed_same_items_other_seed_other_items():
    a, b, c = finance.generate(300, seed=7), finance.generate(300, seed=7), finance.generate(300, seed=8)
    assert [(e.prompt, e.completion, e.meta) for e in a] == [(e.prompt, e.completion, e.meta) for e in b]
    assert not {(e.prompt, e.context) for e in a} & {(e.prompt, e.context) for e in c}
    # ... from the same templates
    assert {e.meta["template"] for e in a} == {e.meta["template"] for e in c} == {t.name for t in TEMPLATES}


def test_items_are_unique_and_topics_balanced(items):
    assert len({(e.prompt, e.context) for e in items}) == len(items)
    counts = Counter(e.meta["template"] for e in items)
    assert set(counts.values()) == {12}


def test_every_item_states_its_answer_value(items):
    for e in items:
        v, unit, d = e.meta["answer_value"], e.meta["unit"], None
        final = e.completion.rsplit(". ", 1)[-1] if ". The" in e.completion or ". " in e.completion else e.completion
        stated = nums(final)[-1] if nums(final) else None
        assert stated is not None, e.completion
        if unit == "$" and "-$" in final:
            stated = -abs(stated)
        d = len(str(v).split(".")[1]) if "." in str(v) else 0
        assert stated == pytest.approx(v, abs=10 ** -max(d, 0) / 2 + 1e-9), (e.completion, v)
        assert e.meta["topic"] in finance.TOPICS


def test_topics_filter_and_unknown_topic():
    got = finance.generate(60, seed=1, topics=["options", "fixed_income"])
    assert {e.meta["topic"] for e in got} == {"options", "fixed_income"}
    with pytest.raises(DataError) as e:
        finance.generate(5, seed=1, topics=["astrology"])
    assert e.value.message == "unknown finance topic(s): astrology"
    assert set(finance.TOPICS) >= {"valuation", "fixed_income", "risk", "options", "portfolio", "corporate_finance"}


# ---------------------------------------------------------------- answers recomputed from the question text
# Independent formulas, written here from the question's own numbers.


def by_template(items, name):
    got = [e for e in items if e.meta["template"] == name]
    assert got, name
    return got


def test_pe_and_dividend_yield_from_question(items):
    for e in by_template(items, "pe_ratio"):
        price, eps = nums(e.prompt)
        assert e.meta["answer_value"] == round(price / eps, 2)
    for e in by_template(items, "dividend_yield"):
        price, div = nums(e.prompt)
        assert e.meta["answer_value"] == pytest.approx(round(100 * div / price, 2))


def test_bond_price_from_question(items):
    for e in by_template(items, "bond_price"):
        years, face, coupon, ytm = nums(e.prompt)
        f = 2 if "semiannually" in e.prompt else 1
        i, n = ytm / 100 / f, int(years) * f
        c = face * coupon / 100 / f
        price = c * (1 - (1 + i) ** -n) / i + face * (1 + i) ** -n
        assert e.meta["answer_value"] == pytest.approx(round(price, 2), abs=0.006)


def test_npv_from_question(items):
    for e in by_template(items, "npv"):
        xs = nums(e.prompt)
        outlay, flows, rate = xs[0], xs[1:-1], xs[-1] / 100
        npv = -outlay + sum(cf / (1 + rate) ** (k + 1) for k, cf in enumerate(flows))
        assert e.meta["answer_value"] == pytest.approx(round(npv, 2), abs=0.006)


def test_irr_from_question(items):
    for e in by_template(items, "irr"):
        xs = nums(e.prompt)
        irr = e.meta["answer_value"] / 100
        flows = [-xs[0]] + xs[1:]
        # NPV at the stated IRR (2 decimals in percent) is ~0; a 0.01% nudge changes its sign.
        def npv(r, flows=flows):
            return sum(cf / (1 + r) ** k for k, cf in enumerate(flows))

        assert npv(irr - 0.0001) > 0 > npv(irr + 0.0001)


def test_black_scholes_from_question(items):
    n = NormalDist().cdf
    for name in ("black_scholes_call", "black_scholes_put"):
        for e in by_template(items, name):
            s, k, t, r, v = nums(e.prompt)
            r, v = r / 100, v / 100
            d1 = (math.log(s / k) + (r + v * v / 2) * t) / (v * math.sqrt(t))
            d2 = d1 - v * math.sqrt(t)
            call = s * n(d1) - k * math.exp(-r * t) * n(d2)
            price = call if name.endswith("call") else call - s + k * math.exp(-r * t)
            assert e.meta["answer_value"] == pytest.approx(round(price, 2), abs=0.006), e.prompt


def test_loan_cagr_var_and_payoff_from_question(items):
    for e in by_template(items, "loan_payment"):
        p, rate, years = nums(e.prompt)
        i, n = rate / 100 / 12, int(years) * 12
        assert e.meta["answer_value"] == pytest.approx(round(p * i * (1 + i) ** n / ((1 + i) ** n - 1), 2), abs=0.006)
    for e in by_template(items, "cagr"):
        begin, end, years = nums(e.prompt)
        assert e.meta["answer_value"] == pytest.approx(round(100 * ((end / begin) ** (1 / years) - 1), 2), abs=0.006)
    for e in by_template(items, "parametric_var"):
        xs = nums(e.prompt)
        value, sigma, h, conf = (xs[0], xs[1] / 100, xs[2], xs[3]) if e.prompt.startswith("A ") else \
            (xs[2], xs[3] / 100, xs[1], xs[0])
        z = NormalDist().inv_cdf(conf / 100)
        assert e.meta["answer_value"] == pytest.approx(round(value * z * sigma * math.sqrt(h), 2), abs=0.006)
    for e in by_template(items, "option_payoff"):
        contracts, _, strike, spot = nums(e.prompt)
        per = max(spot - strike, 0) if " call" in e.prompt else max(strike - spot, 0)
        assert e.meta["answer_value"] == pytest.approx(round(per * 100 * contracts, 2))


def test_statement_ratios_from_context(items):
    fields = ("revenue", "cost of goods sold", "operating income", "net income", "total assets",
              "shareholders' equity", "current assets", "current liabilities", "total debt")
    for name, num, den, scale in [("net_margin", "net income", "revenue", 100), ("roe", "net income",
                                  "shareholders' equity", 100), ("current_ratio", "current assets", "current liabilities", 1)]:
        for e in by_template(items, name):
            text = e.context or e.prompt
            vals = {f: float(re.search(rf"{f} ([\d,.]+)[;.]", text).group(1).replace(",", "")) for f in fields}
            assert e.meta["answer_value"] == pytest.approx(round(vals[num] / vals[den] * scale, 2), abs=0.006)


# ---------------------------------------------------------------- hand-written sets


def test_concepts_and_ood_sizes_and_content():
    concepts, ood = finance.concepts(), finance.general_ood()
    assert len(concepts) >= 150 and len(ood) >= 100
    assert len({e.prompt for e in concepts}) == len(concepts)
    alphas = [e for e in concepts if e.meta["topic"] == "alphas"]
    assert len(alphas) >= 20 and sum("rank(" in e.completion for e in alphas) >= 10
    finance_words = ("stock", "bond", "dividend", "portfolio", "interest rate", "equity")
    assert not [e.prompt for e in ood if any(w in (e.prompt + e.completion).lower() for w in finance_words)]
    assert finance.general_ood(10, seed=1) == finance.general_ood(10, seed=1) != finance.general_ood(10, seed=2)
    with pytest.raises(DataError):
        finance.general_ood(10_000)


def test_tokenizer_corpus_covers_every_kind_of_text():
    texts = list(finance.tokenizer_corpus(seed=0))
    joined = "\n".join(texts)
    assert len(texts) > 1000
    for marker in ("Question:", "Answer:", "### Instruction:", "[INST]", "<|assistant|>", "Context:"):
        assert marker in joined
    assert "capital of France" in joined and "rank(" in joined
    assert list(finance.tokenizer_corpus(seed=0))[:50] == texts[:50]


# ---------------------------------------------------------------- built-in sets


def test_builtin_sets_sizes_and_no_leakage():
    sets = builtin_sets()
    assert {"finance-train", "finance-dev", "general-ood"} <= set(sets)
    train, dev, ood = (load_examples(f"builtin:{n}") for n in ("finance-train", "finance-dev", "general-ood"))
    assert len(train) >= 2000 and len(dev) == 500 and len(ood) >= 100
    assert find_leakage(train, dev).clean
    assert all("answer_value" in e.meta for e in dev)
    assert len({e.meta["template"] for e in dev}) == len(TEMPLATES)  # the dev set covers every template


def test_shipped_files_equal_regeneration():
    for filename, examples in generate_shipped().items():
        shipped = (BUILTIN_DIR / filename).read_text(encoding="utf-8")
        assert shipped == render_jsonl(examples), f"{filename} is stale: run write_shipped()"


def test_unknown_builtin():
    with pytest.raises(DataError) as e:
        load_examples("builtin:finance-tset")
    assert e.value.message == "unknown built-in dataset builtin:finance-tset"
    assert "builtin:finance-train" in e.value.hint


def test_builtin_loads_return_independent_lists():
    a = load_examples("builtin:finance-dev")
    a.clear()
    assert len(load_examples("builtin:finance-dev")) == 500
