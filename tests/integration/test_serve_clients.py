"""The official `openai` and `ollama` clients (and curl) against a real `quantgrid serve` process.

One server process on 127.0.0.1, started through the CLI with an API key; every method of
either client that a route backs is called, and the refused ones must raise the client's
own typed error.
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
pytest.importorskip("torch")

from test_serve import _adapter, serve_process  # noqa: E402

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tiny_base, tmp_path_factory):
    crypto = _adapter(tiny_base, tmp_path_factory.mktemp("ad") / "crypto", 2, "Crypto: bitcoin, ethereum, funding")
    env = {k: v for k, v in os.environ.items() if k != "QUANTGRID_API_KEY"}
    with serve_process("--base", tiny_base, "--adapter", f"crypto={crypto}", "--api-key", KEY, env=env) as url:
        yield url


@pytest.fixture(scope="module")
def oa(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def ol(server):
    return ollama.Client(host=server, headers={"Authorization": f"Bearer {KEY}"})


def test_openai_models_list_and_retrieve(oa):
    assert {"quantgrid", "base", "auto", "quantgrid:crypto"} <= {m.id for m in oa.models.list()}
    m = oa.models.retrieve("quantgrid:crypto")
    assert m.id == "quantgrid:crypto" and m.owned_by == "quantgrid"
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("gpt-4o")


def test_openai_chat_with_logprobs_n_and_usage(oa):
    msgs = [{"role": "user", "content": "What is bitcoin?"}]
    r = oa.chat.completions.create(model="quantgrid:crypto", messages=msgs, max_tokens=5, temperature=0,
                                   logprobs=True, top_logprobs=2, n=2)
    assert len(r.choices) == 2 and r.choices[0].message.content == r.choices[1].message.content  # greedy
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert r.usage.completion_tokens == 2 * len(content) and r.usage.prompt_tokens_details.cached_tokens == 0
    stream = oa.chat.completions.create(model="quantgrid:crypto", messages=msgs, max_tokens=5, temperature=0,
                                        logprobs=True, stream=True, stream_options={"include_usage": True})
    tokens, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            if c.logprobs and c.logprobs.content:
                tokens += [t.token for t in c.logprobs.content]
    assert tokens == [t.token for t in content] and usage.completion_tokens == len(content)


def test_openai_completions_logprobs_and_embeddings(oa):
    r = oa.completions.create(model="base", prompt="Funding rates", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == len(lp.tokens)
    e = oa.embeddings.create(model="quantgrid:crypto", input=["bitcoin", "bond"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 64 and e.usage.prompt_tokens > 0
    b64 = oa.embeddings.create(model="quantgrid:crypto", input="bitcoin")  # the SDK asks for base64 and decodes it
    assert b64.data[0].embedding == pytest.approx(e.data[0].embedding, abs=1e-6)


@pytest.mark.parametrize("kwargs, param", [
    ({"tools": [{"type": "function", "function": {"name": "quote", "parameters": {}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_openai_refused_fields_raise_bad_request_naming_the_field(oa, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}], max_tokens=2, **kwargs)
    assert e.value.param == param and param in e.value.message


def test_openai_needs_the_key(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()


def test_ollama_list_show_ps(ol):
    models = {m.model: m for m in ol.list().models}
    crypto = models["quantgrid:crypto"]
    assert crypto.size > models["base"].size > 0 and crypto.details.family == "llama"
    assert crypto.details.parameter_size and len(crypto.digest) == 64
    show = ol.show("quantgrid:crypto")
    assert show.modelinfo["general.architecture"] == "llama" and "completion" in show.capabilities
    with pytest.raises(ollama.ResponseError) as e:
        ol.show("llama3")
    assert e.value.status_code == 404
    ol.generate(model="quantgrid:crypto", prompt="bitcoin", options={"num_predict": 1})
    assert "quantgrid:crypto" in [m.model for m in ol.ps().models]


def test_ollama_generate_and_chat_report_timings(ol):
    r = ol.generate(model="quantgrid:crypto", prompt="bitcoin", options={"temperature": 0, "num_predict": 5})
    assert r.done and r.eval_count == 5
    tokens_per_s = r.eval_count / r.eval_duration * 1e9  # what `ollama run --verbose` prints
    assert tokens_per_s > 0 and r.prompt_eval_count > 0 and r.load_duration > 0 and r.prompt_eval_duration > 0
    parts = list(ol.chat(model="quantgrid:crypto", messages=[{"role": "user", "content": "bitcoin"}],
                         options={"temperature": 0, "num_predict": 4}, stream=True))
    assert parts[-1].done and parts[-1].eval_duration > 0 and parts[-1].total_duration >= parts[-1].eval_duration
    whole = ol.chat(model="quantgrid:crypto", messages=[{"role": "user", "content": "bitcoin"}],
                    options={"temperature": 0, "num_predict": 4})
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_ollama_embed_and_embeddings(ol):
    e = ol.embed(model="base", input=["bitcoin", "bond"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 64 and e.prompt_eval_count > 0
    legacy = ol.embeddings(model="base", prompt="bitcoin")
    assert list(legacy.embedding) == pytest.approx(list(e.embeddings[0]), abs=1e-6)


def test_ollama_refusals_are_response_errors(ol):
    with pytest.raises(ollama.ResponseError) as e:
        ol.generate(model="base", prompt="x", format="json")
    assert e.value.status_code == 400 and "format" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        ol.pull("llama3")
    assert e.value.status_code == 501
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=ol._client.base_url.__str__()).list()  # no key
    assert e.value.status_code == 401


def test_curl_without_content_type_and_infinity(server):
    """The literal command of Ollama's docs: `curl URL/api/generate -d '{...}'` (a form Content-Type)."""
    body = json.dumps({"model": "base", "prompt": "Why is the sky blue?", "stream": False,
                       "options": {"num_predict": 3}})
    out = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {KEY}", f"{server}/api/generate", "-d", body],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out)["done"] is True
    r = httpx.post(f"{server}/api/chat", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                   content='{"model": "base", "messages": [{"role": "user", "content": "x"}], '
                           '"options": {"temperature": Infinity}}')
    assert r.status_code == 400 and "options.temperature" in r.json()["error"]
    r = httpx.post(f"{server}/api/chat", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                   json={"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]})
    assert r.status_code == 400
    assert httpx.get(f"{server}/").text == "Ollama is running"
    assert httpx.get(f"{server}/api/version", headers={"Authorization": f"Bearer {KEY}"}).json()["version"]
