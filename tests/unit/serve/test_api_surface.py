"""The OpenAI and Ollama surfaces in-process: every field either works or is a 400 naming it."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from quantgrid.serve.app import create_app
from quantgrid.serve.settings import ServeSettings

CHAT = {"model": "quantgrid:crypto", "max_tokens": 5, "temperature": 0,
        "messages": [{"role": "user", "content": "bitcoin funding rates"}]}


@pytest.fixture(scope="module")
def client(tiny_base, adapters):
    settings = ServeSettings(base=tiny_base, adapters={k: str(v) for k, v in adapters.items()}, max_slots=2,
                             router_method="keywords", cors_origins=["http://ui.example"])
    with TestClient(create_app(settings)) as c:
        yield c


def _sse(r) -> list[dict]:
    lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


def test_chat_logprobs_match_the_text_and_are_log_probabilities(client):
    body = client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 3}).json()
    choice = body["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert len(tokens) == body["usage"]["completion_tokens"] == 5
    assert "".join(t["token"] for t in tokens) == choice["message"]["content"]
    for t in tokens:
        assert t["logprob"] <= 0 and len(t["top_logprobs"]) == 3 and t["bytes"] == list(t["token"].encode())
        # greedy: the chosen token is the most likely one
        assert math.isclose(t["top_logprobs"][0]["logprob"], t["logprob"], abs_tol=1e-5)
        assert sum(math.exp(a["logprob"]) for a in t["top_logprobs"]) <= 1.0 + 1e-5
    streamed = _sse(client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 2,
                                                              "stream": True}))
    stream_tokens = [t for c in streamed for ch in c["choices"] if ch["logprobs"] for t in ch["logprobs"]["content"]]
    assert [t["token"] for t in stream_tokens] == [t["token"] for t in tokens]
    assert all(len(t["top_logprobs"]) == 2 for t in stream_tokens)


def test_completion_logprobs_have_openai_legacy_shape(client):
    body = client.post("/v1/completions", json={"model": "base", "prompt": "The bond", "max_tokens": 4,
                                                "temperature": 0, "logprobs": 2}).json()
    lp = body["choices"][0]["logprobs"]
    n = body["usage"]["completion_tokens"]
    assert n > 0 and len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n
    assert "".join(lp["tokens"]) == body["choices"][0]["text"]
    assert lp["text_offset"][0] == 0 and all(len(d) <= 2 for d in lp["top_logprobs"])
    assert body["choices"][0]["logprobs"] is not None
    plain = client.post("/v1/completions", json={"model": "base", "prompt": "The bond", "max_tokens": 4,
                                                 "temperature": 0}).json()
    assert plain["choices"][0]["logprobs"] is None and plain["choices"][0]["text"] == body["choices"][0]["text"]


def test_n_choices_and_usage_details(client):
    body = client.post("/v1/chat/completions", json={**CHAT, "n": 3, "temperature": 1.0, "seed": 7}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    u = body["usage"]
    assert u["completion_tokens"] == 15 and u["total_tokens"] == u["prompt_tokens"] + 15
    assert u["prompt_tokens_details"]["cached_tokens"] == 0
    # seeded: the same request gives the same three choices, and choice i is seed+i
    again = client.post("/v1/chat/completions", json={**CHAT, "n": 3, "temperature": 1.0, "seed": 7}).json()
    assert [c["message"] for c in again["choices"]] == [c["message"] for c in body["choices"]]
    one = client.post("/v1/chat/completions", json={**CHAT, "temperature": 1.0, "seed": 8}).json()
    assert one["choices"][0]["message"] == body["choices"][1]["message"]
    chunks = _sse(client.post("/v1/completions", json={"model": "base", "prompt": "x", "max_tokens": 3, "n": 2,
                                                       "stream": True, "stream_options": {"include_usage": True}}))
    assert {ch["index"] for c in chunks for ch in c["choices"]} == {0, 1}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


def test_models_retrieve_and_embeddings(client):
    assert client.get("/v1/models/quantgrid:crypto").json() == {
        "id": "quantgrid:crypto", "object": "model", "created": client.get("/v1/models").json()["data"][0]["created"],
        "owned_by": "quantgrid"}
    r = client.get("/v1/models/gpt-9")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    body = client.post("/v1/embeddings", json={"model": "base", "input": ["bitcoin", "bond yield"]}).json()
    a, b = (d["embedding"] for d in body["data"])
    assert len(a) == 64 and math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4) and a != b
    assert body["usage"]["prompt_tokens"] > 0
    ad = client.post("/v1/embeddings", json={"model": "quantgrid:options", "input": "bitcoin"}).json()
    assert ad["data"][0]["embedding"] != a  # the adapter is applied
    short = client.post("/v1/embeddings", json={"model": "base", "input": "bitcoin", "dimensions": 8}).json()
    assert len(short["data"][0]["embedding"]) == 8
    assert client.post("/v1/embeddings", json={"model": "auto", "input": "x"}).status_code == 400


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"store": True}, "store"),
    ({"bogus_field": 1}, "bogus_field"),
    ({"n": 99}, "n"),
    ({"temperature": 1e400}, "temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
])
def test_openai_refusals_are_400_naming_the_field(client, extra, param):
    r = client.post("/v1/chat/completions", content=json.dumps({**CHAT, **extra}))  # json.dumps writes Infinity
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"].startswith(param) and err["message"]


def test_text_content_parts_work_and_tool_free_choices_are_accepted(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "tool_choice": "none", "response_format": {"type": "text"},
                                                  "messages": [{"role": "user", "content": [
                                                      {"type": "text", "text": "bitcoin "},
                                                      {"type": "text", "text": "funding rates"}]}]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"] == client.post("/v1/chat/completions", json=CHAT).json()[
        "choices"][0]["message"]


def test_unknown_routes_and_methods_answer_in_the_api_shape(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    r = client.get("/api/nothing")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_cors_preflight(client):
    r = client.options("/v1/chat/completions", headers={"Origin": "http://ui.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://ui.example"
    r = client.options("/v1/chat/completions", headers={"Origin": "http://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_api_key_is_required_when_set(tiny_base, adapters, monkeypatch):
    monkeypatch.setenv("QUANTGRID_API_KEY", "s3cret")
    with TestClient(create_app(ServeSettings(base=tiny_base))) as c:
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/tags").status_code == 401 and isinstance(c.get("/api/tags").json()["error"], str)
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


# ---------------------------------------------------------------------- Ollama


def test_ollama_final_chunk_has_every_count_and_timing(client):
    body = client.post("/api/generate", json={"model": "quantgrid:crypto", "prompt": "bitcoin", "stream": False,
                                              "options": {"temperature": 0, "num_predict": 4}}).json()
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                "eval_duration"):
        assert isinstance(body[key], int) and body[key] > 0, key
    assert body["eval_count"] == 4 and body["done_reason"] == "length"
    assert body["total_duration"] >= body["eval_duration"] and body["total_duration"] >= body["prompt_eval_duration"]
    with client.stream("POST", "/api/chat", json={"model": "base", "options": {"num_predict": 3},
                                                  "messages": [{"role": "user", "content": "hi"}]}) as r:
        last = [json.loads(ln) for ln in r.iter_lines() if ln][-1]
    assert last["done"] and last["eval_duration"] > 0 and last["prompt_eval_count"] > 0


def test_ollama_body_without_content_type_like_curl_d(client):
    r = client.post("/api/generate", content=json.dumps({"model": "base", "prompt": "hi", "stream": False,
                                                         "options": {"num_predict": 2}}),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["done"]


@pytest.mark.parametrize("body, field", [
    ({"format": "json"}, "format"),
    ({"format": {"type": "object"}}, "format"),
    ({"options": {"temperature": float("inf")}}, "options.temperature"),
    ({"options": {"top_k": 5}}, "options.top_k"),
    ({"messages": [{"role": "user", "content": ["not", "text"]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "messages[0].images"),
    ({"tools": [{"type": "function"}]}, "tools"),
])
def test_ollama_refusals_are_400_naming_the_field(client, body, field):
    req = {"model": "base", "stream": False, "messages": [{"role": "user", "content": "hi"}], **body}
    r = client.post("/api/chat", content=json.dumps(req))  # json.dumps writes inf as the literal Infinity
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_ollama_tags_show_ps_version_embed(client, adapters):
    tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    base, crypto = tags["base"], tags["quantgrid:crypto"]
    assert base["details"]["family"] == "llama" and base["details"]["parameter_size"].endswith(("K", "M"))
    adapter_bytes = (adapters["crypto"] / "adapter_model.safetensors").stat().st_size
    assert crypto["size"] == base["size"] + adapter_bytes and len(crypto["digest"]) == 64
    assert crypto["digest"] != base["digest"]
    show = client.post("/api/show", json={"model": "quantgrid:crypto"}).json()
    assert show["model_info"]["general.architecture"] == "llama" and "completion" in show["capabilities"]
    assert show["model_info"]["llama.context_length"] == 1024
    assert client.post("/api/show", json={"model": "nope"}).status_code == 404
    client.post("/api/generate", json={"model": "quantgrid:crypto", "prompt": "x", "stream": False,
                                       "options": {"num_predict": 1}})
    running = [m["name"] for m in client.get("/api/ps").json()["models"]]
    assert "base" in running and "quantgrid:crypto" in running
    assert client.get("/api/version").json()["version"]
    assert client.get("/").text == "Ollama is running"
    e = client.post("/api/embed", json={"model": "base", "input": ["a", "b"]}).json()
    assert len(e["embeddings"]) == 2 and e["prompt_eval_count"] > 0
    legacy = client.post("/api/embeddings", json={"model": "base", "prompt": "a"}).json()["embedding"]
    assert legacy == pytest.approx(e["embeddings"][0], abs=1e-6)
    r = client.post("/api/pull", json={"model": "llama3"})
    assert r.status_code == 501 and "--adapter" in r.json()["error"]
