"""One prompt everywhere: chat requests are served with the prompt the adapter was trained on.

For every template of the registry, with an adapter trained by the trainer: the ids the
server builds for a chat request equal the training encoder's, greedy output equals PEFT
``generate`` on the training prompt, and transformers' ``apply_chat_template`` with the
shipped template renders the same text. The release carries its recipe's template too.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import torch
from serve_helpers import peft_with, running_engine
from serve_trained import TRAINED_SPECS

from quantgrid.data import Example
from quantgrid.data.prompts import render
from quantgrid.ml.tokenize import IGNORE_INDEX, encode
from quantgrid.recipe import PROMPT_TEMPLATES, Recipe
from quantgrid.serve.sampling import SamplingParams

SYSTEM = Recipe().system_prompt
QUESTION = "A 5-year bond pays a 4% annual coupon and trades at a 5% yield. What is its price per $1,000 face?"
CONTEXT = "The bond was issued in 2021 by Northwind Industries."
# A single question, a grounded one, and a conversation with a system message and history.
CONVERSATIONS = [
    [{"role": "user", "content": QUESTION}],
    [{"role": "user", "content": f"Context: {CONTEXT}\n\nQuestion: {QUESTION}"}],
    [{"role": "system", "content": "Answer in one sentence."},
     {"role": "user", "content": "What is a coupon?"}, {"role": "assistant", "content": "The interest a bond pays."},
     {"role": "user", "content": QUESTION}],
]


def training_example(messages) -> Example:
    """The same conversation as a training record would hold it (what `quantgrid train` reads)."""
    from quantgrid.data.formats import get_format

    return get_format("messages").parse({"messages": [*messages, {"role": "assistant", "content": "x"}]})


def training_prompt_ids(tok, messages, template: str) -> list[int]:
    enc = encode(tok, training_example(messages), template, None, SYSTEM)
    return enc.input_ids[:next(i for i, t in enumerate(enc.labels) if t != IGNORE_INDEX)]


@pytest.fixture(scope="module")
def served(tiny_base, trained_adapters):
    with running_engine(tiny_base, trained_adapters, max_batch=8, max_slots=3) as eng:
        yield eng


@pytest.fixture(scope="module")
def peft_trained(tiny_base, trained_adapters):
    pm, tok = peft_with(tiny_base, trained_adapters)
    pm.eval()
    return pm, tok


def test_trained_adapters_use_every_template():
    assert sorted(t for _, t in TRAINED_SPECS) == sorted(PROMPT_TEMPLATES)


@pytest.mark.parametrize("name,template", TRAINED_SPECS)
def test_shipped_chat_template_renders_the_training_text(name, template, trained_adapters, tiny_base):
    from transformers import AutoTokenizer

    from quantgrid.ml.models import load_tokenizer

    d = trained_adapters[name]
    assert json.loads((d / "quantgrid.json").read_text())["recipe"]["prompt_template"] == template
    shipped = (d / "chat_template.jinja").read_text()
    assert json.loads((d / "tokenizer_config.json").read_text())["chat_template"] == shipped
    base_tok = load_tokenizer(tiny_base)
    tok = AutoTokenizer.from_pretrained(str(d))  # what transformers / vLLM users load from the adapter
    assert tok.chat_template == shipped
    for messages in CONVERSATIONS:
        prompt, completion = render(training_example(messages), template, base_tok, SYSTEM)
        start = "" if template == "chat" else base_tok.bos_token  # the chat template writes its own
        assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == start + prompt
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert ids == training_prompt_ids(base_tok, messages, template)
        # A whole conversation (the answer included) renders as the whole training text.
        whole = [*messages, {"role": "assistant", "content": "x"}]
        assert tok.apply_chat_template(whole, tokenize=False) == start + prompt + completion + base_tok.eos_token


@pytest.mark.parametrize("name,template", TRAINED_SPECS)
def test_server_ids_equal_the_training_encoders(name, template, served):
    for messages in CONVERSATIONS:
        assert served.encode_chat(messages, adapter=name) == training_prompt_ids(served.tokenizer, messages, template)
    # The base model keeps the base tokenizer's own chat template.
    base_ids = served.encode_chat(CONVERSATIONS[0])
    assert base_ids == served.tokenizer.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True,
                                                            tokenize=True)["input_ids"]


def test_greedy_output_equals_peft_generate_on_the_training_prompt(served, peft_trained):
    pm, tok = peft_trained
    n = 10
    for name, template in TRAINED_SPECS:
        for messages in CONVERSATIONS[:2]:
            ids = served.encode_chat(messages, adapter=name)
            text, _ = served.generate(ids, SamplingParams(temperature=0, max_tokens=n), adapter=name)
            prompt = torch.tensor([training_prompt_ids(tok, messages, template)])
            pm.set_adapter(name)
            with torch.no_grad():
                out = pm.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                  do_sample=False, pad_token_id=tok.pad_token_id)
            assert text == tok.decode(out[0, prompt.shape[1]:], skip_special_tokens=True), (name, messages)


def test_release_ships_its_recipes_template_and_serves_with_it(tiny_base, trained_adapters, tmp_path, served):
    """A release built from trained adapters carries the chat template, and the `quantgrid`
    model (the deployed release) builds its chat prompts with it."""
    from transformers import AutoTokenizer

    from quantgrid.merge.release import BuildOptions, Contribution, build_release, read_factors
    from quantgrid.ml.models import base_info
    from quantgrid.serve.deploy import Deployer, ReleaseRef
    from quantgrid.serve.router import Router

    recipe = Recipe(base_model=base_info(tiny_base).name, prompt_template="mistral")
    contribs = [Contribution(id=f"{i:06d}", contributor=n, factors=read_factors(trained_adapters[n]))
                for i, n in enumerate(["fixed_income", "risk"])]
    out = tmp_path / "2026.48"
    out.mkdir()
    build_release(out, contribs, recipe, version="2026.48", base_path=tiny_base, opts=BuildOptions(),
                  now=dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc))
    tok = AutoTokenizer.from_pretrained(str(out))
    base_tok = served.tokenizer
    messages = CONVERSATIONS[2]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        base_tok.bos_token + render(training_example(messages), "mistral", base_tok, recipe.system_prompt)[0])
    router = Router(served)
    Deployer(served, router, None).deploy(ReleaseRef("2026.48", out))
    target = router.resolve("quantgrid")
    assert target.adapter == router.release
    assert served.encode_chat(messages, adapter=target.adapter) == training_prompt_ids(base_tok, messages, "mistral")
    served.adapters.pop(router.release)  # leave the module's engine as it was


@pytest.fixture(scope="module")
def http_server(tiny_base, trained_adapters, served):
    """`quantgrid serve`'s app in uvicorn on 127.0.0.1, on the module's engine."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from quantgrid.serve.app import create_app
    from quantgrid.serve.settings import ServeSettings

    settings = ServeSettings(base=tiny_base, adapters={k: str(v) for k, v in trained_adapters.items()})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, engine=served), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(timeout=30)


def test_openai_and_ollama_chat_answer_like_peft_on_the_training_prompt(http_server, peft_trained):
    """The real clients' chat calls get the greedy answer PEFT gives on the training prompt."""
    import ollama
    import openai

    pm, tok = peft_trained
    n = 8
    oa = openai.OpenAI(base_url=http_server + "/v1", api_key="unused")
    ol = ollama.Client(host=http_server)
    for name, template in TRAINED_SPECS:
        messages = CONVERSATIONS[0]
        prompt = torch.tensor([training_prompt_ids(tok, messages, template)])
        pm.set_adapter(name)
        with torch.no_grad():
            out = pm.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                              do_sample=False, pad_token_id=tok.pad_token_id)
        want = tok.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
        chat = oa.chat.completions.create(model=f"quantgrid:{name}", messages=messages, max_tokens=n, temperature=0)
        assert chat.choices[0].message.content == want, name
        assert chat.usage.prompt_tokens == prompt.shape[1]  # the training prompt's length
        reply = ol.chat(model=f"quantgrid:{name}", messages=messages, options={"temperature": 0, "num_predict": n})
        assert reply.message.content == want, name


def test_ollama_show_reports_the_template_each_adapter_was_trained_with(http_server, peft_trained):
    """`ollama show` (Open WebUI reads it) gives the Go twin of the adapter's training prompt,
    the system prompt where training used one, and the stop words, as `export ollama` writes them."""
    import httpx
    import ollama

    from quantgrid.data.modelfile import GO_TEMPLATES, TRAINS_WITH_SYSTEM
    from quantgrid.ml.models import CHAT_TEMPLATE

    _, tok = peft_trained
    assert tok.chat_template == CHAT_TEMPLATE  # so "chat" has a known Go twin on this base
    ol = ollama.Client(host=http_server)
    for name, template in TRAINED_SPECS:
        show = ol.show(f"quantgrid:{name}")
        assert show.template == GO_TEMPLATES[template], name
        # the official client has no `system` field; Ollama's own API answers one
        system = httpx.post(http_server + "/api/show", json={"model": f"quantgrid:{name}"}).json()["system"]
        assert system == (SYSTEM if template in TRAINS_WITH_SYSTEM else ""), name
        assert f'stop "{tok.eos_token}"' in show.parameters.splitlines(), name
        assert f'TEMPLATE """{GO_TEMPLATES[template]}"""' in show.modelfile, name
    base = ol.show("base")
    assert base.template == CHAT_TEMPLATE and "stop" not in base.parameters  # the base is served with its own
