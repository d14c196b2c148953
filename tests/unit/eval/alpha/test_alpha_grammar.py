"""The parser: precedence, associativity, positions in errors, and a print/parse round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgrid.errors import EvalError
from quantgrid.eval.alpha import parse, unparse
from quantgrid.eval.alpha.grammar import Binary, Call, Name, Number, Ternary, Unary, tokenize

BENCH = Path(__file__).parents[4] / "src/quantgrid/data/builtin/alpha-bench.jsonl"


def canon(src: str) -> str:
    return unparse(parse(src))


@pytest.mark.parametrize(
    "src, expected",
    [
        ("1 + 2 * 3", "(1 + (2 * 3))"),
        ("(1 + 2) * 3", "((1 + 2) * 3)"),
        ("a - b - c", "((a - b) - c)"),  # left-associative
        ("a / b / c", "((a / b) / c)"),
        ("2 ^ 3 ^ 2", "(2 ^ (3 ^ 2))"),  # right-associative
        ("-x ^ 2", "(-(x ^ 2))"),  # power binds tighter than unary minus
        ("2 ^ -1", "(2 ^ (-1))"),
        ("-1 * close", "((-1) * close)"),  # a literal negative is folded into the number
        ("--close", "(-(-close))"),
        ("+close", "close"),
        ("a < b || c > d && e", "((a < b) || ((c > d) && e))"),  # && binds tighter than ||
        ("a == b < c", "(a == (b < c))"),
        ("a + b < c * d", "((a + b) < (c * d))"),
        ("a ? b : c ? d : e", "(a ? b : (c ? d : e))"),  # ternary nests to the right
        ("a < b ? 1 : -1", "((a < b) ? 1 : (-1))"),
        ("Ts_Rank(close, 10)", "ts_rank(close, 10)"),  # function names are case-insensitive
        ("IndNeutralize(close, IndClass.industry)", "indneutralize(close, IndClass.industry)"),
        ("rank(x)", "rank(x)"),
        ("f()", "f()"),
        ("1.5e-3 + .5", "(0.0015 + 0.5)"),
    ],
)
def test_precedence_and_associativity(src, expected):
    assert canon(src) == expected


def test_tree_shape_of_the_paper_example():
    tree = parse("(-1 * correlation(rank(delta(log(volume), 1)), rank(((close - open) / open)), 6))")
    assert isinstance(tree, Binary) and tree.op == "*"
    assert tree.left == Number(1, -1.0)
    corr = tree.right
    assert isinstance(corr, Call) and corr.func == "correlation" and len(corr.args) == 3
    assert corr.args[2].value == 6.0
    inner = corr.args[0].args[0]  # delta(log(volume), 1)
    assert inner.func == "delta" and inner.args[0] == Call(inner.args[0].pos, "log", (Name(inner.args[0].pos + 4, "volume"),))


def test_tokens_carry_positions():
    toks = tokenize("rank(close) >= 0.5")
    assert [(t.kind, t.text, t.pos) for t in toks] == [
        ("name", "rank", 0), ("op", "(", 4), ("name", "close", 5), ("op", ")", 10),
        ("op", ">=", 12), ("num", "0.5", 15), ("end", "", 18),
    ]


def test_nodes_record_their_position():
    tree = parse("close - ts_min(low, 5)")
    assert tree.pos == 6 and tree.right.pos == 8 and tree.right.args[0].pos == 15


@pytest.mark.parametrize(
    "src, pos, words",
    [
        ("rank(close", 10, "expected ')'"),
        ("rank(close))", 11, "unexpected ')'"),
        ("close $ open", 6, "unexpected character '$'"),
        ("close +", 7, "expected a number"),
        ("(close ? open)", 13, "expected ':'"),
        ("rank(close,)", 11, "expected a number"),
        ("close open", 6, "unexpected 'open'"),
    ],
)
def test_syntax_errors_name_the_position(src, pos, words):
    with pytest.raises(EvalError) as err:
        parse(src)
    msg = err.value.message
    assert f"position {pos}" in msg and words in msg
    # the caret sits under the offending character
    line, marker = msg.split("\n")[1:3]
    assert marker.index("^") == line.index(src[0]) + pos
    assert err.value.hint


def test_caret_shows_a_window_of_a_long_expression():
    src = "rank(close) + " * 20 + "rank(close $ open)"
    with pytest.raises(EvalError) as err:
        parse(src)
    line, marker = err.value.message.split("\n")[1:3]
    assert len(line) < 100 and line.lstrip().startswith("...")
    assert line[marker.index("^")] == "$"


def test_single_ampersand_gets_a_hint():
    with pytest.raises(EvalError) as err:
        parse("(close > 1) & (open > 1)")
    assert "&&" in err.value.hint


@pytest.mark.parametrize("src", ["", "   ", None, 5])
def test_empty_or_non_text_is_an_error(src):
    with pytest.raises(EvalError):
        parse(src)


def test_benchmark_expressions_round_trip():
    for line in BENCH.read_text().splitlines():
        src = json.loads(line)["answer"]
        assert canon(canon(src)) == canon(src)


# random trees: printing then parsing gives the same tree back
_names = st.sampled_from(["close", "open", "volume", "x", "adv20"])
_nums = st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda v: round(v, 3))


def _trees():
    leaves = st.one_of(_names.map(lambda n: Name(0, n)), _nums.map(lambda v: Number(0, v)))

    def extend(children):
        return st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*", "/", "^", "<", ">=", "==", "!=", "&&", "||"]), children, children)
            .map(lambda t: Binary(0, *t)),
            children.map(lambda c: Unary(0, "-", c)),
            st.tuples(children, children, children).map(lambda t: Ternary(0, *t)),
            st.tuples(st.sampled_from(["rank", "delta", "correlation"]), st.lists(children, min_size=1, max_size=3))
            .map(lambda t: Call(0, t[0], tuple(t[1]))),
        )

    return st.recursive(leaves, extend, max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(_trees())
def test_unparse_then_parse_is_identity(tree):
    text = unparse(tree)
    assert unparse(parse(text)) == text
