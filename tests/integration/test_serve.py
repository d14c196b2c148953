"""quantgrid serve as real servers on 127.0.0.1, driven by the real `openai` and `ollama` clients.

The front server runs in a uvicorn thread; its upstream is a second quantgrid server
started as a separate process through the CLI, so fallback goes over real HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
uvicorn = pytest.importorskip("uvicorn")

from _adapters import save_peft_adapter  # noqa: E402

from quantgrid.serve.app import create_app  # noqa: E402
from quantgrid.serve.settings import ServeSettings  # noqa: E402
from quantgrid.serve.upstream import UpstreamConfig  # noqa: E402


def _adapter(base: str, out: Path, seed: int, description: str) -> Path:
    """A rank-8 LoRA on o_proj whose dataset description says what it is for."""
    return save_peft_adapter(base, out, seed, 8, ["o_proj"], description)


def _free_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def _wait_healthy(url: str, timeout: float = 120, proc: subprocess.Popen | None = None,
                  health: str = "/health") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"upstream server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url + health, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


@contextlib.contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None):
    """`quantgrid serve ARGS --port P` as a separate process on 127.0.0.1; yields its URL."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    cli = shutil.which("quantgrid", path=str(Path(sys.executable).parent)) or "quantgrid"
    proc = subprocess.Popen([cli, "serve", *args, "--port", str(port), "--log-level", "warning"],
                            env={**(os.environ if env is None else env), "LOCAL_PYTORCH_ENABLED": "true"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def crypto(tiny_base, tmp_path_factory) -> Path:
    return _adapter(tiny_base, tmp_path_factory.mktemp("ad") / "crypto", 2, "Crypto: bitcoin, ethereum, funding")


@pytest.fixture(scope="module")
def upstream_url(tiny_base, crypto):
    """A second quantgrid server, a separate process started with `quantgrid serve`."""
    with serve_process("--base", tiny_base, "--adapter", f"crypto={crypto}") as url:
        yield url


class _ThreadServer:
    def __init__(self, app, health: str = "/health"):
        self.sock = _free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.health = health

    def __enter__(self):
        self.thread.start()
        _wait_healthy(self.url, health=self.health)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def front(tiny_base, crypto, upstream_url):
    settings = ServeSettings(base=tiny_base, adapters={"crypto": str(crypto)}, router_method="keywords",
                             auto_fallback="upstream",
                             upstreams=[UpstreamConfig(name="twin", base_url=upstream_url + "/v1")])
    app = create_app(settings)
    with _ThreadServer(app) as srv:
        srv.app = app
        yield srv


def test_openai_client_chat_and_completions(front):
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused")
    assert {"quantgrid", "base", "auto", "quantgrid:crypto"} <= {m.id for m in client.models.list()}
    chat = client.chat.completions.create(model="quantgrid:crypto", max_tokens=8, temperature=0, seed=1,
                                          messages=[{"role": "user", "content": "What is bitcoin?"}])
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 8
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="quantgrid:crypto", max_tokens=8, temperature=0, stream=True,
        messages=[{"role": "user", "content": "What is bitcoin?"}]) if c.choices)
    assert streamed == chat.choices[0].message.content
    comp = client.completions.create(model="quantgrid:crypto", prompt="Funding rates", max_tokens=6, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="quantgrid:crypto", prompt="Funding rates", max_tokens=6, temperature=0, stream=True))
    assert streamed == comp.choices[0].text and len(comp.choices[0].text) > 0
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError, match="1024"):
        client.completions.create(model="base", prompt="word " * 2000)


def test_ollama_client(front):
    client = ollama.Client(host=front.url)
    assert "quantgrid:crypto" in [m.model for m in client.list().models]
    r = client.generate(model="quantgrid:crypto", prompt="bitcoin", options={"temperature": 0, "num_predict": 5})
    assert r.done and r.eval_count == 5 and r.response
    parts = list(client.chat(model="quantgrid:crypto", messages=[{"role": "user", "content": "bitcoin"}],
                             options={"temperature": 0, "num_predict": 5}, stream=True))
    assert parts[-1].done and "".join(p.message.content for p in parts) == \
        client.chat(model="quantgrid:crypto", messages=[{"role": "user", "content": "bitcoin"}],
                    options={"temperature": 0, "num_predict": 5}).message.content


def test_fallback_to_a_second_server_over_http(front):
    body = {"model": "auto", "prompt": "Write a haiku", "max_tokens": 4, "temperature": 0}
    r = httpx.post(front.url + "/v1/completions", json=body, timeout=60)  # the router finds nothing local
    assert r.status_code == 200 and r.headers["X-QuantGrid-Backend"] == "upstream:twin"
    r = httpx.post(front.url + "/v1/completions", json={**body, "prompt": "bitcoin funding"}, timeout=60)
    assert r.headers["X-QuantGrid-Backend"] == "local" and r.headers["X-QuantGrid-Adapter"] == "crypto"
    # A local engine that times out: the upstream answers, with the same greedy text.
    local = httpx.post(front.url + "/v1/completions", timeout=60, json={**body, "model": "quantgrid:crypto"}).json()
    front.app.state.qg.settings.local_timeout_s = 1e-6
    try:
        with httpx.stream("POST", front.url + "/v1/completions", timeout=60,
                          json={**body, "model": "quantgrid:crypto", "stream": True}) as r:
            assert r.headers["X-QuantGrid-Backend"] == "upstream:twin"
            text = "".join(json.loads(ln[6:])["choices"][0]["text"] for ln in r.iter_lines()
                           if ln.startswith("data: {"))
    finally:
        front.app.state.qg.settings.local_timeout_s = 30.0
    assert text == local["choices"][0]["text"]


def test_local_disabled_sends_everything_upstream(upstream_url, monkeypatch):
    monkeypatch.setenv("LOCAL_PYTORCH_ENABLED", "false")
    app = create_app(ServeSettings(upstreams=[UpstreamConfig(name="down", base_url="http://127.0.0.1:9/v1"),
                                              UpstreamConfig(name="twin", base_url=upstream_url + "/v1")]))
    with _ThreadServer(app) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")
        raw = client.chat.completions.with_raw_response.create(
            model="quantgrid:crypto", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["X-QuantGrid-Backend"] == "upstream:twin"
        assert raw.parse().usage.completion_tokens == 3


def test_client_disconnect_mid_stream_frees_the_slot(front):
    engine = front.app.state.qg.engine
    before = engine.stats.requests_cancelled
    with httpx.stream("POST", front.url + "/v1/completions", timeout=60, json={
            "model": "quantgrid:crypto", "prompt": "bitcoin", "max_tokens": 1000, "temperature": 0,
            "stream": True}) as r:
        lines = r.iter_lines()
        next(ln for ln in lines if ln.startswith("data: {"))
        assert engine.n_active == 1
    deadline = time.time() + 30
    while (engine.n_active or engine.stats.requests_cancelled == before) and time.time() < deadline:
        time.sleep(0.02)
    assert engine.n_active == 0 and engine.stats.requests_cancelled == before + 1
    assert engine.slots.refs[engine.slots.slot_of["crypto"]] == 0
    metrics = httpx.get(front.url + "/metrics").text
    assert f"quantgrid_engine_requests_cancelled_total {float(before + 1)}" in metrics


def test_auto_deploy_from_a_real_hub(tiny_base, crypto, tmp_path):
    """The hub's own release endpoints over HTTP: serve `--release latest --hub URL`, then the hub
    publishes a new release and the server swaps it in without a restart."""
    pytest.importorskip("sqlalchemy")
    from quantgrid.hub.server.app import create_app as create_hub
    from quantgrid.hub.server.models import Release
    from quantgrid.hub.settings import HubSettings

    hub_app = create_hub(HubSettings(storage_dir=tmp_path / "hub", worker_enabled=False,
                                     rate_limit_per_minute=100_000, rate_limit_burst=10_000))
    releases = {}
    for i, version in enumerate(["2026.46", "2026.47"]):
        releases[version] = _adapter(tiny_base, tmp_path / "hub" / "releases" / version, 10 + i, "release")

    def publish(version: str) -> None:
        from sqlalchemy import update

        with hub_app.state.db.write() as s:
            s.execute(update(Release).values(is_current=False))
            s.add(Release(version=version, status="published", path=str(releases[version]), is_current=True))

    with _ThreadServer(hub_app, health="/v1/health") as hub:
        publish("2026.46")
        settings = ServeSettings(base=tiny_base, release="latest", hub=hub.url, poll_interval_s=0.5,
                                 release_cache=str(tmp_path / "cache"))
        app = create_app(settings)
        with _ThreadServer(app) as srv:
            body = {"model": "quantgrid", "prompt": "bitcoin", "max_tokens": 4, "temperature": 0}
            r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 200 and r.headers["X-QuantGrid-Adapter"] == "release-2026.46"
            publish("2026.47")
            deadline = time.time() + 60
            while httpx.get(srv.url + "/health").json()["release"] != "2026.47" and time.time() < deadline:
                time.sleep(0.1)
            r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 200 and r.headers["X-QuantGrid-Adapter"] == "release-2026.47"
    # cached per hub + version + build time (see HubReleaseSource._cache_key)
    assert len(list((tmp_path / "cache").glob("2026.47-*/adapter_model.safetensors"))) == 1


def test_non_streaming_client_that_disconnects_frees_its_row(front):
    """A client that gives up on a non-streaming request: its row stops within a poll, not at max_tokens."""
    engine = front.app.state.qg.engine
    before = engine.stats.requests_cancelled
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(front.url + "/v1/completions", timeout=httpx.Timeout(60, read=0.5), json={
            "model": "quantgrid:crypto", "prompt": "bitcoin", "max_tokens": 1000, "temperature": 0,
            "stop": [], "seed": 1, "ignore_eos": True})  # an early end-of-text would finish it first
    deadline = time.time() + 30
    while (engine.n_active or engine.stats.requests_cancelled == before) and time.time() < deadline:
        time.sleep(0.02)
    assert engine.n_active == 0 and engine.stats.requests_cancelled == before + 1
    assert engine.slots.refs[engine.slots.slot_of["crypto"]] == 0


def test_ignore_eos_generates_exactly_max_tokens(front):
    """vLLM's ignore_eos extension: the answer runs to max_tokens whatever the model would end on."""
    r = httpx.post(front.url + "/v1/completions", timeout=60, json={
        "model": "quantgrid:crypto", "prompt": "bitcoin", "max_tokens": 40, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 40 and body["choices"][0]["finish_reason"] == "length"


def _send_raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        try:
            s.sendall(request)
        except OSError:  # the server may hang up before it has read everything
            pass
        return s.recv(200)


def test_an_oversized_header_block_is_refused_and_the_server_goes_on(upstream_url):
    """`quantgrid serve` bounds a request's headers (64 KiB): a 1 MB header line is a 400, not
    a megabyte held per connection, and the next request is served."""
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    assert _send_raw(upstream_url, big).startswith(b"HTTP/1.1 400")
    ok = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Real: " + b"a" * 8000 + b"\r\nConnection: close\r\n\r\n"
    assert _send_raw(upstream_url, ok).startswith(b"HTTP/1.1 200")


def test_clients_that_leave_early_leave_no_error_behind(front, caplog):
    """Every way of leaving early (non-streaming, streaming with n=2, half a body) cancels the
    rows quietly: no "unhandled error", no ASGI traceback, nothing counted as a server error."""
    import logging

    engine = front.app.state.qg.engine
    asgi_log = logging.getLogger("uvicorn.error")  # uvicorn's own logger does not propagate
    asgi_log.addHandler(caplog.handler)
    before = engine.stats.requests_cancelled
    body = {"model": "quantgrid:crypto", "prompt": "bitcoin", "max_tokens": 1000, "temperature": 0,
            "ignore_eos": True}
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(front.url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
        with httpx.stream("POST", front.url + "/v1/completions", timeout=60,
                          json={**body, "stream": True, "n": 2, "seed": 1}) as r:
            next(ln for ln in r.iter_lines() if ln.startswith("data: {"))
        raw = json.dumps({"model": "quantgrid:crypto", "prompt": "x" * 2000}).encode()
        host, port = front.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(raw) + raw[:1000])
            time.sleep(0.5)
        deadline = time.time() + 30
        while (engine.n_active or engine.stats.requests_cancelled < before + 3) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # let the handlers of the half-sent request finish logging, if they would
    finally:
        asgi_log.removeHandler(caplog.handler)
    assert engine.n_active == 0 and engine.stats.requests_cancelled == before + 3  # one row + the two choices
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    metrics = httpx.get(front.url + "/metrics").text
    assert not re.search(r'quantgrid_request_errors_total\{[^}]*status="5', metrics)  # no 5xx counted
