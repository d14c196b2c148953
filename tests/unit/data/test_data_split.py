"""Leakage detection (exact and n-gram near-duplicates), leak-free splits, fingerprints."""

from __future__ import annotations

import pytest

from quantgrid.data import Example, example_hash, finance, fingerprint
from quantgrid.data.split import duplicate_groups, find_leakage, ngrams, split_examples, split_examples_report
from quantgrid.errors import DataError

LONG = ("The weighted average cost of capital blends the cost of equity and the after tax cost of debt "
        "by their market value weights in the capital structure of the firm")


def ex(q: str, a: str = "an answer", ctx: str | None = None) -> Example:
    return Example(q, a, ctx)


def test_ngrams_short_text_is_one_gram():
    assert ngrams("a b c", n=8) == {("a", "b", "c")}
    assert len(ngrams(" ".join(str(i) for i in range(10)), n=8)) == 3
    assert ngrams("Price is $1,234.50 today", n=2) == {("price", "is"), ("is", "1,234.50"), ("1,234.50", "today")}


def test_exact_leak_ignores_case_and_whitespace():
    report = find_leakage([ex("What is  NPV?"), ex("Other")], [ex("what is npv?"), ex("Fresh question")])
    assert [(o.bench_index, o.train_index, o.kind) for o in report.overlaps] == [(0, 0, "exact")]
    assert report.leaked_bench == {0} and not report.clean


def test_near_duplicate_is_caught_and_distinct_items_are_not():
    train = [ex(LONG), ex("Completely different words about bond convexity and yields")]
    near = ex(LONG.replace("the firm", "a company"))  # a small edit
    far = ex("A stock trades at 50 dollars with earnings of 5 dollars per share so what is its multiple")
    report = find_leakage(train, [near, far])
    assert [(o.bench_index, o.train_index, o.kind) for o in report.overlaps] == [(0, 0, "near")]
    assert 0.5 <= report.overlaps[0].score < 1


def test_threshold_and_n_matter():
    a, b = ex(LONG), ex(LONG.split(" by ")[0] + " and something else entirely different here now ok")
    score = find_leakage([a], [b], threshold=0.01).overlaps[0].score
    assert find_leakage([a], [b], threshold=score).overlaps
    assert not find_leakage([a], [b], threshold=min(1.0, score + 0.01)).overlaps
    with pytest.raises(DataError):
        find_leakage([a], [b], threshold=0)


def test_all_pairs_lists_every_train_match():
    train = [ex(LONG), ex(LONG + " indeed"), ex("unrelated text entirely")]
    report = find_leakage(train, [ex(LONG + " really")], all_pairs=True)
    assert sorted(o.train_index for o in report.overlaps) == [0, 1]


def test_duplicate_groups_are_transitive():
    items = [ex(LONG), ex("x y z"), ex(LONG + " extra words"), ex("X  Y z"), ex(LONG + " extra words and more")]
    groups, n_exact, n_near = duplicate_groups(items)
    assert sorted(sorted(g) for g in groups) == [[0, 2, 4], [1, 3]]
    assert n_exact == 1 and n_near >= 2


def test_split_has_no_leakage_even_with_planted_duplicates():
    base = finance.generate(300, seed=5)
    planted = base + [Example(e.prompt.upper(), e.completion, e.context) for e in base[:40]] + \
        [Example(e.prompt + " Please answer.", e.completion, e.context) for e in base[40:80]]
    train, bench = split_examples(planted, 60, seed=3)
    assert len(bench) == 60
    assert find_leakage(train, bench).clean
    # Nothing lost: every item is in train or bench unless dropped as a benchmark duplicate.
    report = split_examples_report(planted, 60, seed=3)
    assert len(report.train) + len(report.bench) + report.dropped == len(planted)


def test_split_is_reproducible_and_seeded():
    data = finance.generate(200, seed=9)
    a = split_examples(data, 20, seed=1)
    assert [e.prompt for e in a[1]] == [e.prompt for e in split_examples(data, 20, seed=1)[1]]
    assert [e.prompt for e in a[1]] != [e.prompt for e in split_examples(data, 20, seed=2)[1]]


def test_split_too_small():
    with pytest.raises(DataError) as e:
        split_examples([ex("a"), ex("b"), ex("a")], 2, seed=0)
    assert e.value.message == ("3 examples (2 after merging duplicates) are too few for a benchmark of 2 plus a "
                               "training set")
    with pytest.raises(DataError):
        split_examples([ex("a"), ex("b")], 0, seed=0)


def test_example_hash_and_fingerprint():
    a, b = ex("What is beta?", "Market sensitivity."), ex("What  is beta? ", "Market sensitivity.")
    assert example_hash(a) == example_hash(b)  # whitespace-normalized
    assert example_hash(a) != example_hash(ex("What is beta?", "Something else."))
    assert example_hash(a) != example_hash(ex("What is beta?", "Market sensitivity.", ctx="c"))
    fp = fingerprint([a, ex("Q2", "A2", "ctx")])
    assert fp["n_examples"] == 2 and fp["n_with_context"] == 1 and len(fp["sha256"]) == 64
    assert fp == fingerprint([ex("Q2", "A2", "ctx"), a])  # order-independent
    assert fp["sha256"] != fingerprint([a])["sha256"]
    # Counts and one hash only: no text, no per-example hashes.
    flat = repr(fp)
    assert "beta" not in flat and example_hash(a) not in flat
    assert set(fp) == {"schema", "n_examples", "n_unique", "n_with_context", "prompt_chars", "completion_chars", "sha256"}


def test_hashed_index_agrees_with_the_set_definition():
    # The vectorized, hashed index must give exactly the shares the plain n-gram sets give.
    import random

    from quantgrid.data.split import item_text

    rng = random.Random(0)
    vocab = ["rate", "bond", "yield", "price", "5%", "$100", "the", "a", "of", "is", "what", "cash", "flow"]
    train = [ex(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30)))) for _ in range(60)]
    bench = [ex(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30)))) for _ in range(30)]
    for n in (1, 3, 8):
        got = {(o.bench_index, o.train_index): o.score
               for o in find_leakage(train, bench, n=n, threshold=1e-9, all_pairs=True).overlaps if o.kind == "near"}
        for b, be in enumerate(bench):
            gb = ngrams(item_text(be), n)
            if any(" ".join(item_text(be).lower().split()) == " ".join(item_text(t).lower().split()) for t in train):
                continue  # reported as exact instead
            for t, te in enumerate(train):
                share = len(gb & ngrams(item_text(te), n)) / len(gb)
                assert got.get((b, t), 0.0) == pytest.approx(round(share, 4)), (n, b, t)
