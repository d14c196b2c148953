"""Token choice and stop strings, by table."""

from __future__ import annotations

import pytest
import torch

from quantgrid.serve.sampling import (
    SamplingParams,
    find_stop,
    make_generator,
    safe_prefix_len,
    sample_token,
    top_p_filter,
)


@pytest.mark.parametrize("probs,top_p,kept", [
    ([0.5, 0.3, 0.2], 1.0, [0, 1, 2]),
    ([0.5, 0.3, 0.2], 0.5, [0]),
    ([0.5, 0.3, 0.2], 0.6, [0, 1]),
    ([0.2, 0.5, 0.3], 0.8, [1, 2]),
    ([0.9, 0.05, 0.05], 0.01, [0]),
])
def test_top_p_keeps_the_smallest_nucleus(probs, top_p, kept):
    out = top_p_filter(torch.tensor(probs), top_p)
    assert sorted(torch.nonzero(out).squeeze(1).tolist()) == kept
    assert float(out.sum()) == pytest.approx(1.0)


def test_greedy_takes_argmax_and_seed_reproduces():
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9])
    assert sample_token(logits, SamplingParams(temperature=0), make_generator(None)) == 1
    p = SamplingParams(temperature=1.5, top_p=0.95, seed=7)
    a = [sample_token(logits, p, g) for g in [make_generator(7)] for _ in range(20)]
    b = [sample_token(logits, p, g) for g in [make_generator(7)] for _ in range(20)]
    assert a == b
    assert len(set(a)) > 1  # temperature 1.5 over two near-equal tokens does sample both


def test_top_p_small_makes_sampling_greedy():
    logits = torch.tensor([0.0, 1.0, 5.0, 0.5])
    g = make_generator(1)
    assert {sample_token(logits, SamplingParams(temperature=1.0, top_p=0.01), g) for _ in range(30)} == {2}


@pytest.mark.parametrize("text,stops,expected", [
    ("hello world", ["world"], 6),
    ("hello world", ["xyz"], None),
    ("a. b\n\nc", ["\n\n", "."], 1),
    ("abc", [""], None),
])
def test_find_stop(text, stops, expected):
    assert find_stop(text, stops) == expected


@pytest.mark.parametrize("text,stops,expected", [
    ("hello wor", ["world"], 6),     # "wor" may become "world": hold it back
    ("hello", ["world"], 5),
    ("abc\ufffd", [], 3),           # half a UTF-8 character: wait for the rest
    ("end\n", ["\n\n"], 3),
    ("", ["x"], 0),
])
def test_safe_prefix_len_holds_back_possible_stop_starts(text, stops, expected):
    assert safe_prefix_len(text, stops) == expected


@pytest.mark.parametrize("given,expected", [
    (dict(temperature=1e-300), dict(temperature=0.0)),  # below the floor: greedy
    (dict(temperature=0.7), dict(temperature=0.7)),
    (dict(temperature=1e9), dict(temperature=100.0)),
    (dict(seed=2 ** 64), dict(seed=0)),
    (dict(seed=-1), dict(seed=2 ** 64 - 1)),
    (dict(stop="END"), dict(stop=["END"])),
    (dict(stop=["a", "", "a", "b"]), dict(stop=["a", "b"])),
])
def test_validated_clamps_into_range(given, expected):
    from quantgrid.serve.sampling import SamplingParams

    p = SamplingParams(**given).validated()
    for k, v in expected.items():
        assert getattr(p, k) == v


def test_a_clamped_seed_seeds_the_generator():
    import torch

    from quantgrid.serve.sampling import make_generator

    a = torch.rand(3, generator=make_generator(2 ** 64 + 5))
    assert torch.equal(a, torch.rand(3, generator=make_generator(5)))
