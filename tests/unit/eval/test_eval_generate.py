"""Greedy batched generation: left padding must not change any answer."""

from __future__ import annotations

import pytest

from quantgrid.eval.generate import generate_answers, prompt_ids, truncate_at_stop
from quantgrid.ml.tokenize import IGNORE_INDEX, encode


def test_truncate_at_stop():
    assert truncate_at_stop(" 42.\nQuestion: next one") == "42."
    assert truncate_at_stop("fine answer ") == "fine answer"
    assert truncate_at_stop("a\n### Instruction: b\nContext: c") == "a"


def test_batched_equals_one_by_one_in_input_order(tiny_base):
    from quantgrid.data import finance
    from quantgrid.data.types import Example
    from quantgrid.ml.models import load_base

    model, tok = load_base(tiny_base, device="cpu")
    exs = finance.generate(5, seed=9) + [Example("Hi?", "Hello."), Example("What is a bond?", "A loan.")]
    batched = generate_answers(model, tok, exs, max_new_tokens=12, batch_size=7)
    single = [generate_answers(model, tok, [e], max_new_tokens=12, batch_size=1)[0] for e in exs]
    assert batched == single
    assert len(batched) == len(exs) and any(batched)
    # the prompt fed to generation is exactly the masked prefix proof of loss uses
    enc = encode(tok, exs[0], "qa")
    ids = prompt_ids(tok, exs[0], "qa")
    assert enc.input_ids[: len(ids)] == ids and enc.labels[len(ids) - 1] == IGNORE_INDEX
    assert enc.labels[len(ids)] != IGNORE_INDEX
    assert generate_answers(model, tok, [], max_new_tokens=4) == []


def test_unknown_adapter_is_an_error(tiny_base):
    from quantgrid.data.types import Example
    from quantgrid.errors import EvalError
    from quantgrid.ml.models import load_base

    model, tok = load_base(tiny_base, device="cpu")
    with pytest.raises(EvalError, match="no adapters"):
        generate_answers(model, tok, [Example("q", "a")], adapter="finance", max_new_tokens=2)
