"""The recipe's prompt as a Jinja chat template: the same text as training, for every template.

transformers renders the generated template (its sandboxed Jinja) for many shapes of
conversation; the result must equal ``render`` on the Example the training reader builds
from the same messages, with the tokenizer's start token where training adds it.
"""

from __future__ import annotations

import pytest

from quantgrid.data import Example
from quantgrid.data.chat_template import adds_bos, chat_template
from quantgrid.data.prompts import TEMPLATES, example_from_messages, render, render_messages, split_context
from quantgrid.errors import ConfigError

CONVERSATIONS = [
    [{"role": "user", "content": "What is a bond?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a bond?"}],
    [{"role": "user", "content": "Context: Price 40, EPS 2.\n\nQuestion: What is the P/E?"}],
    [{"role": "user", "content": "Context: \n\nQuestion: What is the P/E?"}],  # empty context: a plain question
    [{"role": "user", "content": "Context: a\n\nQuestion: b\n\nQuestion: c"}],  # the first marker splits
    [{"role": "system", "content": "S1"}, {"role": "developer", "content": 'S2 "quoted" \\ é 😀 {{ x }}'},
     {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
    [{"role": "user", "content": "Q1"}, {"role": "user", "content": "Q1b"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "Context: c\n\nQuestion: q"}],  # odd history, as a dataset may hold it
]
SYSTEMS = [None, "", 'You are careful.\nShow "numbers".']


@pytest.fixture(scope="module")
def tok(tiny_base):
    from quantgrid.ml.models import load_tokenizer

    return load_tokenizer(tiny_base)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("system", SYSTEMS)
def test_jinja_renders_what_training_renders(tok, template, system):
    source = chat_template(template, system_prompt=system, tokenizer=tok)
    start = "" if template == "chat" else tok.bos_token
    for messages in CONVERSATIONS:
        got = tok.apply_chat_template(messages, chat_template=source, tokenize=False, add_generation_prompt=True)
        assert got == start + render_messages(messages, template, tok, system), messages
        ex = example_from_messages(messages)
        answer = Example(ex.prompt, "  An answer.", ex.context, ex.meta)
        prompt, completion = render(answer, template, tok, system)
        whole = tok.apply_chat_template([*messages, {"role": "assistant", "content": "  An answer."}],
                                        chat_template=source, tokenize=False)
        assert whole == start + prompt + completion + tok.eos_token


def test_start_token_follows_the_tokenizer(tok):
    assert adds_bos(tok)
    assert chat_template("qa", tokenizer=tok).count("bos_token") == 1
    assert "bos_token" not in chat_template("qa", tokenizer=None)


def test_messages_are_read_like_a_training_record():
    ex = example_from_messages([{"role": "system", "content": "s"}, {"role": "user", "content": "q0"},
                                {"role": "assistant", "content": "a0"},
                                {"role": "user", "content": "Context: c\n\nQuestion: q"}])
    assert (ex.prompt, ex.context, ex.meta["system"]) == ("q", "c", "s")
    assert ex.meta["history"] == [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}]
    assert split_context("plain") == ("plain", None)


@pytest.mark.parametrize("messages,match", [
    ([{"role": "assistant", "content": "hi"}], "last message must be the user's"),
    ([{"role": "user", "content": "  "}], "no question"),
    ([{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}], "role 'tool'"),
    ([{"role": "user", "content": 5}], "must be text"),
])
def test_bad_conversations_are_refused_with_the_reason(messages, match):
    with pytest.raises(ConfigError, match=match):
        example_from_messages(messages)


def test_chat_needs_a_tokenizer_template_and_names_are_checked():
    with pytest.raises(ConfigError, match="chat template"):
        chat_template("chat", tokenizer=None)
    with pytest.raises(ConfigError, match="unknown prompt template"):
        chat_template("vicuna")
