"""The engine: parity with PEFT, continuous batching, sampling controls, slots, cancellation."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from serve_helpers import peft_with

from quantgrid.errors import ConfigError, ModelError, NotFound
from quantgrid.serve.engine import Delta, Done, GenRequest
from quantgrid.serve.sampling import SamplingParams

PROMPTS = ["The stock price of", "What is the yield to maturity of a bond", "Options give the right"]


@pytest.fixture(scope="module")
def peft_model(tiny_base, adapters):
    return peft_with(tiny_base, adapters)


def peft_greedy(pm, tok, prompt: str, adapter: str | None, n: int) -> str:
    ids = tok(prompt, return_tensors="pt")
    kw = dict(max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        if adapter is None:
            with pm.disable_adapter():
                out = pm.generate(**ids, **kw)
        else:
            pm.set_adapter(adapter)
            out = pm.generate(**ids, **kw)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def run_concurrently(engine, jobs):
    """Submit all (prompt, adapter, params) at once; results in order."""
    results = [None] * len(jobs)

    def go(i, prompt, adapter, params):
        results[i] = engine.generate(prompt, params, adapter=adapter)

    threads = [threading.Thread(target=go, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_greedy_parity_with_peft_in_one_mixed_batch(engine, peft_model):
    """Every (prompt, adapter) pair decoded together, 3 adapters over 2 slots, equals PEFT alone."""
    pm, tok = peft_model
    n = 12
    jobs = [(p, a, SamplingParams(temperature=0, max_tokens=n)) for p in PROMPTS
            for a in (None, "options", "bonds", "crypto")]
    results = run_concurrently(engine, jobs)
    outputs = set()
    for (prompt, adapter, _), (text, done) in zip(jobs, results, strict=True):
        assert text == peft_greedy(pm, tok, prompt, adapter, n), (prompt, adapter)
        assert done.finish_reason in ("length", "stop")
        outputs.add(text)
    assert len(outputs) > len(PROMPTS)  # the adapters really change the text
    assert engine.stats.adapter_evictions > 0  # 3 adapters in 2 slots: LRU did evict


def test_joining_a_running_batch_does_not_change_outputs(engine):
    params = SamplingParams(temperature=0, max_tokens=30)
    alone = engine.generate(PROMPTS[1], params, adapter="options")[0]
    long_text: list[str] = []
    t = threading.Thread(target=lambda: long_text.append(engine.generate(PROMPTS[0], params, adapter="bonds")[0]))
    t.start()
    while engine.stats.decode_steps == 0 or engine.n_active == 0:  # wait until the first is decoding
        time.sleep(0.001)
    joined = engine.generate(PROMPTS[1], params, adapter="options")[0]
    t.join()
    assert joined == alone
    assert long_text[0] == engine.generate(PROMPTS[0], params, adapter="bonds")[0]


def test_max_tokens_stop_strings_and_eos(engine, tiny_base):
    # "crypto" (random o_proj LoRA) never emits EOS on these prompts; the plain base soon does.
    text, done = engine.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=5), adapter="crypto")
    assert done.finish_reason == "length" and done.completion_tokens == 5
    full, _ = engine.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=20), adapter="crypto")
    assert full.startswith(text)
    stop = full[3:5]
    cut, done = engine.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=20, stop=[stop]),
                                adapter="crypto")
    assert done.finish_reason == "stop" and cut == full[:full.index(stop)]
    short, done = engine.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=200))
    assert done.finish_reason == "stop" and done.completion_tokens < 200  # the base ends with EOS


def test_seeded_sampling_is_reproducible_and_independent_of_batch(engine):
    p = SamplingParams(temperature=1.0, top_p=0.9, seed=123, max_tokens=15)
    a = engine.generate(PROMPTS[2], p, adapter="crypto")[0]
    jobs = [(PROMPTS[2], "crypto", SamplingParams(temperature=1.0, top_p=0.9, seed=123, max_tokens=15)),
            (PROMPTS[0], "options", SamplingParams(temperature=0.7, seed=5, max_tokens=15))]
    b = run_concurrently(engine, jobs)[0][0]
    c = engine.generate(PROMPTS[2], SamplingParams(temperature=1.0, top_p=0.9, seed=124, max_tokens=15),
                        adapter="crypto")[0]
    assert a == b
    assert a != c


def test_cancel_frees_the_row_and_slot(engine):
    events: list = []
    req = GenRequest(engine.encode(PROMPTS[0]), SamplingParams(temperature=0, max_tokens=500),
                     events.append, adapter="crypto")
    engine.submit(req)
    while not any(isinstance(e, Delta) for e in events):
        time.sleep(0.001)
    req.cancel()
    deadline = time.time() + 30
    while not any(isinstance(e, Done) for e in events) and time.time() < deadline:
        time.sleep(0.005)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "cancelled"
    assert done.completion_tokens < 500
    assert engine.n_active == 0
    slot = engine.slots.slot_of["crypto"]
    assert engine.slots.refs[slot] == 0


def test_bad_requests(engine, tmp_path):
    with pytest.raises(NotFound):
        engine.submit(GenRequest([1, 2], SamplingParams(), lambda e: None, adapter="nope"))
    with pytest.raises(ConfigError, match=str(engine.context_length)):
        engine.submit(GenRequest([5] * engine.context_length, SamplingParams(), lambda e: None))
    with pytest.raises(ModelError):
        engine.register_adapter("bad", tmp_path)


def test_adapter_for_another_base_is_refused(engine, adapters, tmp_path):
    import json
    import shutil

    d = tmp_path / "foreign"
    shutil.copytree(adapters["bonds"], d)
    (d / "quantgrid.json").write_text(json.dumps({"base_model": {"name": "llama-70b", "fingerprint": "0" * 16}}))
    with pytest.raises(ModelError, match="llama-70b"):
        engine.register_adapter("foreign", d)


def test_a_failing_prefill_fails_only_the_joining_request(engine, monkeypatch):
    real = engine.model.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        engine.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=3), adapter="bonds")
    monkeypatch.setattr(engine.model, "forward", real)
    assert engine.slots.refs[engine.slots.slot_of["bonds"]] == 0  # its slot was given back
    text, done = engine.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=3), adapter="bonds")
    assert done.finish_reason in ("stop", "length")
