"""One request never hurts another: hostile sampling settings, failures, huge prompts, disconnects.

Engine-level cases submit to a real engine (the tiny base and PEFT-saved adapters); the
HTTP cases run ``quantgrid serve``'s app in uvicorn on 127.0.0.1 with httpx. Nothing here
asserts a time: each test asserts what happened (texts, counts, statuses, slots).
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from serve_helpers import engine_with

from quantgrid.errors import PayloadTooLarge
from quantgrid.serve.engine import Delta, Done, Failed, GenRequest
from quantgrid.serve.sampling import MAX_STOP_SEQUENCES, SamplingError, SamplingParams

PROMPT = "The stock price of"


def wait_for(cond, what: str, limit: float = 60.0) -> None:
    """Poll ``cond`` (bounded, so a broken engine fails the test instead of hanging it)."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


def collect(engine, prompt_ids, params, adapter=None) -> tuple[GenRequest, list]:
    events: list = []
    return engine.submit(GenRequest(prompt_ids, params, events.append, adapter=adapter)), events


def finished(events) -> bool:
    return bool(events) and not isinstance(events[-1], Delta)


@pytest.fixture(scope="module")
def cold_engine(tiny_base, adapters):
    """An engine whose scheduler is not running yet: requests submitted before ``start``
    are admitted together, in one batch."""
    eng = engine_with(tiny_base, adapters, max_batch=8, max_slots=1)
    yield eng
    eng.stop()


def test_tiny_temperature_is_greedy_and_its_batch_neighbour_is_untouched(cold_engine):
    eng = cold_engine
    ids = eng.encode(PROMPT)
    hostile, hostile_events = collect(eng, ids, SamplingParams(temperature=1e-300, max_tokens=12), "crypto")
    honest, honest_events = collect(eng, eng.encode("Options give the right"),
                                    SamplingParams(temperature=0.8, seed=3, max_tokens=12), "crypto")
    assert hostile.params.temperature == 0.0  # below the floor: greedy
    eng.start()  # both are admitted in the same step, so they share every forward pass
    wait_for(lambda: finished(hostile_events) and finished(honest_events), "both requests")
    assert isinstance(hostile_events[-1], Done) and isinstance(honest_events[-1], Done)
    greedy, _ = eng.generate(ids, SamplingParams(temperature=0, max_tokens=12), adapter="crypto")
    assert "".join(e.text for e in hostile_events[:-1]) == greedy
    alone, _ = eng.generate("Options give the right", SamplingParams(temperature=0.8, seed=3, max_tokens=12),
                            adapter="crypto")
    assert "".join(e.text for e in honest_events[:-1]) == alone


def test_seed_beyond_64_bits_is_reduced_and_leaks_no_slot(cold_engine):
    eng = cold_engine.start()  # max_slots=1: a leaked slot would block every later request
    ids = eng.encode(PROMPT)
    params = dict(temperature=1.0, max_tokens=6)
    big, _ = eng.generate(ids, SamplingParams(seed=2 ** 64, **params), adapter="bonds")
    zero, _ = eng.generate(ids, SamplingParams(seed=0, **params), adapter="bonds")
    assert big == zero  # 2**64 is reduced to the generator's range
    eng.generate(ids, SamplingParams(seed=-5, **params), adapter="bonds")
    assert eng.slots.refs == [0]
    # Decoded next to an honest request (same adapter, the only slot), neither is disturbed.
    _, hostile_events = collect(eng, ids, SamplingParams(seed=2 ** 64, **params), "bonds")
    _, honest_events = collect(eng, ids, SamplingParams(temperature=0, max_tokens=6), "bonds")
    wait_for(lambda: finished(hostile_events) and finished(honest_events), "both requests")
    assert "".join(e.text for e in hostile_events[:-1]) == zero
    greedy, _ = eng.generate(ids, SamplingParams(temperature=0, max_tokens=6), adapter="bonds")
    assert isinstance(honest_events[-1], Done) and "".join(e.text for e in honest_events[:-1]) == greedy
    assert eng.slots.refs == [0]
    # The one slot is free for another adapter at once.
    text, done = eng.generate(ids, SamplingParams(temperature=0, max_tokens=3), adapter="options")
    assert done.finish_reason in ("stop", "length") and eng.slots.refs == [0]


@pytest.mark.parametrize("params,param", [
    (SamplingParams(stop=[f"s{i}" for i in range(10_000)]), "stop"),
    (SamplingParams(stop=["x" * 10_000]), "stop"),
    (SamplingParams(temperature=float("inf")), "temperature"),
    (SamplingParams(temperature=float("nan")), "temperature"),
    (SamplingParams(temperature=-1), "temperature"),
    (SamplingParams(top_p=0), "top_p"),
    (SamplingParams(max_tokens=0), "max_tokens"),
    (SamplingParams(logprobs=10_000), "top_logprobs"),
])
def test_out_of_range_settings_are_refused_before_the_batch(engine, params, param):
    before = engine.stats.requests_finished + engine.stats.requests_failed
    with pytest.raises(SamplingError) as info:
        engine.submit(GenRequest([1, 2, 3], params, lambda e: None))
    assert info.value.param == param and info.value.http_status == 400
    assert engine.n_waiting == 0 and engine.stats.requests_finished + engine.stats.requests_failed == before


def test_stop_list_at_the_cap_works(engine):
    stops = [f"never-{i}" for i in range(MAX_STOP_SEQUENCES)]
    text, done = engine.generate(PROMPT, SamplingParams(temperature=0, max_tokens=8, stop=stops), adapter="crypto")
    plain, _ = engine.generate(PROMPT, SamplingParams(temperature=0, max_tokens=8), adapter="crypto")
    assert text == plain and done.completion_tokens == 8


def test_a_row_failing_while_decoding_ends_alone(engine, monkeypatch):
    """The sampler raising for one row finishes that row with the error; the others decode on
    to the same text as alone, and every slot is given back."""
    import quantgrid.serve.engine as engine_mod

    real = engine_mod.sample_token
    poisoned = SamplingParams(temperature=0.5, seed=99, max_tokens=12)

    def flaky(logits, params, generator):
        if params.seed == 99:
            raise RuntimeError("simulated sampler fault")
        return real(logits, params, generator)

    monkeypatch.setattr(engine_mod, "sample_token", flaky)
    ids = engine.encode(PROMPT)
    good, good_events = collect(engine, ids, SamplingParams(temperature=0, max_tokens=12), "options")
    bad, bad_events = collect(engine, ids, poisoned, "bonds")
    wait_for(lambda: finished(good_events) and finished(bad_events), "both requests")
    assert isinstance(bad_events[-1], Failed) and "simulated" in str(bad_events[-1].error)
    assert isinstance(good_events[-1], Done) and good_events[-1].completion_tokens == 12
    monkeypatch.setattr(engine_mod, "sample_token", real)
    alone, _ = engine.generate(ids, SamplingParams(temperature=0, max_tokens=12), adapter="options")
    assert "".join(e.text for e in good_events[:-1]) == alone
    assert all(r == 0 for r in engine.slots.refs)


def test_cancel_takes_effect_at_the_next_step(engine):
    """Cancelled while its 3rd token is delivered: no 4th token is generated."""
    events: list = []
    holder: list[GenRequest] = []

    def sink(ev):
        events.append(ev)
        if isinstance(ev, Delta) and len(holder[0].generated) == 3:
            engine.cancel(holder[0].id)

    req = GenRequest(engine.encode(PROMPT), SamplingParams(temperature=0, max_tokens=400), sink, adapter="crypto")
    holder.append(req)
    engine.submit(req)
    wait_for(lambda: finished(events), "the cancelled request")
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "cancelled"
    assert events[-1].completion_tokens == 3
    assert not engine.cancel(req.id)  # already finished
    assert all(r == 0 for r in engine.slots.refs) and engine.n_active == 0


def test_prompt_over_the_size_limit_is_refused_untokenized(engine, monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "tokenizer", _Spy(engine.tokenizer, calls))
    with pytest.raises(PayloadTooLarge, match="characters"):
        engine.encode_request(prompt="x" * (engine.max_prompt_chars + 1))
    with pytest.raises(PayloadTooLarge):
        engine.encode_request(messages=[{"role": "user", "content": "y" * (engine.max_prompt_chars + 1)}])
    assert calls == []


class _Spy:
    def __init__(self, tok, calls):
        self._tok, self._calls = tok, calls

    def __call__(self, *a, **kw):
        self._calls.append(a)
        return self._tok(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


# ---------------------------------------------------------------------- over HTTP


def _free_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


@pytest.fixture(scope="module")
def server(tiny_base, adapters):
    import uvicorn

    from quantgrid.serve.app import create_app
    from quantgrid.serve.engine import Engine
    from quantgrid.serve.settings import ServeSettings

    eng = Engine.from_base(tiny_base, max_batch=8, max_slots=2)
    settings = ServeSettings(base=tiny_base, adapters={k: str(v) for k, v in adapters.items()}, max_slots=2)
    app = create_app(settings, engine=eng)
    sock = _free_socket()
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    wait_for(lambda: _healthy(url), "the server")
    yield url, eng
    srv.should_exit = True
    thread.join(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_http_hostile_settings_get_400_or_are_clamped(server):
    url, _ = server
    r = httpx.post(url + "/v1/completions", timeout=30, json={
        "model": "base", "prompt": PROMPT, "max_tokens": 4, "stop": [f"s{i}" for i in range(10_000)]})
    assert r.status_code == 400 and "stop" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "model": "quantgrid:crypto", "max_tokens": 4, "temperature": 1e-300,
        "messages": [{"role": "user", "content": "What is bitcoin?"}]})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    # Ollama's route: the same gate (Python's json writes inf as the literal Infinity).
    r = httpx.post(url + "/api/generate", timeout=30, headers={"content-type": "application/json"},
                   content=b'{"model": "quantgrid:crypto", "prompt": "Hi", "stream": false, '
                           b'"options": {"temperature": Infinity}}')
    assert r.status_code == 400 and "temperature" in r.json()["error"]
    r = httpx.post(url + "/api/chat", timeout=30, json={
        "model": "quantgrid:crypto", "stream": False, "options": {"temperature": 1e-300, "num_predict": 3},
        "messages": [{"role": "user", "content": "What is bitcoin?"}]})
    assert r.status_code == 200 and r.json()["eval_count"] == 3


def test_health_answers_while_a_big_prompt_is_tokenized(server, monkeypatch):
    """A 5 MB prompt is refused (413) before any tokenizing; one just under the size limit is
    tokenized off the event loop: /health answers while that tokenization is held open."""
    url, eng = server
    r = httpx.post(url + "/v1/completions", timeout=60, json={"model": "base", "prompt": "word " * 1_000_000})
    assert r.status_code == 413 and "characters" in r.json()["error"]["message"]
    started, release = threading.Event(), threading.Event()
    real = eng.encode_request

    def held_encode(*a, **kw):
        started.set()
        release.wait(60)  # hold the tokenization until /health has answered
        return real(*a, **kw)

    monkeypatch.setattr(eng, "encode_request", held_encode)
    result: dict = {}
    big = "word " * (eng.max_prompt_chars // 5)

    def post():
        result["r"] = httpx.post(url + "/v1/completions", timeout=120,
                                 json={"model": "base", "prompt": big, "max_tokens": 1})

    t = threading.Thread(target=post)
    t.start()
    try:
        assert started.wait(60), "the big prompt never reached tokenization"
        h = httpx.get(url + "/health", timeout=30)
        assert h.status_code == 200 and h.json()["status"] == "ok"
    finally:
        release.set()
        t.join(120)
    r = result["r"]
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]  # 13,107 tokens > 1024


@pytest.mark.parametrize("stream", [False, True])
def test_a_disconnected_client_has_its_row_cancelled(server, stream):
    """A client that goes away (its socket closed mid-answer) gets its row cancelled."""
    import json

    url, eng = server
    before, tokens_before = eng.stats.requests_cancelled, eng.stats.tokens_generated
    body = json.dumps({"model": "quantgrid:crypto", "prompt": PROMPT, "max_tokens": 5000, "temperature": 0,
                       "stream": stream}).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:  # a plain client, closed at will
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        if stream:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # the first chunk: the row is decoding
        wait_for(lambda: eng.n_active > 0 and eng.stats.tokens_generated > tokens_before, "the row to decode")
    wait_for(lambda: eng.stats.requests_cancelled > before and eng.n_active == 0, "the cancellation")
    assert eng.stats.tokens_generated - tokens_before < 5000  # not generated to the end for nobody
    assert all(r == 0 for r in eng.slots.refs)
