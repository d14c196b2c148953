"""The HTTP API in-process: shapes, streaming, errors, metrics, fallback to an upstream app."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from quantgrid.serve.app import BACKEND_HEADER, create_app
from quantgrid.serve.settings import ServeSettings
from quantgrid.serve.upstream import UpstreamConfig


@pytest.fixture(scope="module")
def client(tiny_base, adapters):
    settings = ServeSettings(base=tiny_base, adapters={k: str(v) for k, v in adapters.items()}, max_slots=2,
                             router_method="keywords")
    with TestClient(create_app(settings)) as c:
        yield c


def test_models_and_tags_list_every_name(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids[:3] == ["quantgrid", "base", "auto"]
    assert {"quantgrid:options", "quantgrid:bonds", "quantgrid:crypto"} <= set(ids)
    tags = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert tags == ids


def test_completion_and_chat_non_streaming(client):
    r = client.post("/v1/completions", json={"model": "quantgrid:crypto", "prompt": "The stock price of",
                                             "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200 and r.headers[BACKEND_HEADER] == "local"
    body = r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 6 and body["choices"][0]["text"]
    r = client.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": "Hi"}],
                                                  "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200
    msg = r.json()["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)


def test_streaming_matches_non_streaming(client):
    req = {"model": "quantgrid:bonds", "prompt": "Options give the right", "max_tokens": 10, "temperature": 0}
    full = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**req, "stream": True,
                                                        "stream_options": {"include_usage": True}}) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == full
    assert chunks[-1]["usage"]["completion_tokens"] == 10


def test_ollama_generate_and_chat(client):
    r = client.post("/api/generate", json={"model": "quantgrid:crypto", "prompt": "Hello", "stream": False,
                                           "options": {"temperature": 0, "num_predict": 5}})
    body = r.json()
    assert body["done"] is True and body["eval_count"] == 5 and body["response"]
    with client.stream("POST", "/api/chat", json={"model": "quantgrid:crypto", "options": {"num_predict": 4, "seed": 1},
                                                  "messages": [{"role": "user", "content": "Hi"}]}) as r:
        lines = [json.loads(ln) for ln in r.iter_lines() if ln]
    assert lines[-1]["done"] is True and all(not ln["done"] for ln in lines[:-1])
    assert lines[-1]["eval_count"] == 4


def test_auto_routes_by_keywords_and_says_which_adapter(client):
    r = client.post("/v1/chat/completions", json={
        "model": "auto", "max_tokens": 3,
        "messages": [{"role": "user", "content": "bitcoin and ethereum funding rates?"}]})
    assert r.status_code == 200 and r.headers["X-QuantGrid-Adapter"] == "crypto"
    r = client.post("/v1/completions", json={"model": "auto", "prompt": "a poem", "max_tokens": 2})
    assert r.status_code == 200 and "X-QuantGrid-Adapter" not in r.headers  # no release: the base


def test_errors_have_the_api_shapes(client):
    r = client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and "gpt-5" in err["message"] and err["type"] == "invalid_request_error"
    r = client.post("/v1/completions", json={"model": "base", "prompt": "word " * 2000})
    assert r.status_code == 400 and "1024" in r.json()["error"]["message"]
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]  # OpenAI answers 400, not 422
    r = client.post("/v1/completions", json={"model": "base", "prompt": "x", "temperature": 5})
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "temperature"
    r = client.post("/api/chat", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_health_and_metrics(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["local"] and h["engine"]["context_length"] == 1024
    text = client.get("/metrics").text
    assert "quantgrid_engine_generated_tokens_total" in text
    assert 'quantgrid_requests_total{api="openai",backend="local"}' in text


def test_local_disabled_goes_to_upstream_app(client, monkeypatch):
    """LOCAL_PYTORCH_ENABLED=false: every request goes up the chain (here an in-process app)."""
    upstream_app = client.app
    monkeypatch.setenv("LOCAL_PYTORCH_ENABLED", "false")
    monkeypatch.setenv("QG_TEST_KEY", "secret")
    settings = ServeSettings(upstreams=[
        UpstreamConfig(name="dead", base_url="http://127.0.0.1:9/v1"),
        UpstreamConfig(name="twin", base_url="http://twin/v1", api_key_env="QG_TEST_KEY")])
    assert settings.local_enabled is False
    app = create_app(settings)
    transport = httpx.ASGITransport(app=upstream_app)

    async def handler(request: httpx.Request):
        if request.url.host != "twin":
            raise httpx.ConnectError("refused")
        assert request.headers["authorization"] == "Bearer secret"
        return await transport.handle_async_request(request)

    app.state.qg.upstreams.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"model": "quantgrid:crypto", "prompt": "Hi", "max_tokens": 4,
                                            "temperature": 0})
        assert r.status_code == 200 and r.headers[BACKEND_HEADER] == "upstream:twin"
        direct = client.post("/v1/completions", json={"model": "quantgrid:crypto", "prompt": "Hi",
                                                       "max_tokens": 4, "temperature": 0}).json()
        assert r.json()["choices"][0]["text"] == direct["choices"][0]["text"]
        assert c.get("/health").json()["local"] is False
