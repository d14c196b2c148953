"""Prompt templates: exact layouts, loss only on the completion, the tokenizer's chat template."""

from __future__ import annotations

import pytest

from quantgrid.data import Example
from quantgrid.data.prompts import TEMPLATES, render, render_text
from quantgrid.errors import ConfigError
from quantgrid.recipe import PROMPT_TEMPLATES

Q = Example("What is a bond?", "A loan to an issuer.")
QC = Example("What is the P/E?", "20.", context="Price 40, EPS 2.")


def test_every_recipe_template_is_registered():
    assert set(PROMPT_TEMPLATES) == set(TEMPLATES)


def test_qa_and_context_qa_layouts():
    assert render(Q, "qa") == ("Question: What is a bond?\nAnswer:", " A loan to an issuer.")
    # qa with context uses the context layout (the BullishAI format).
    assert render(QC, "qa") == ("Context: Price 40, EPS 2.\nQuestion: What is the P/E?\nAnswer:", " 20.")
    assert render(QC, "context_qa") == render(QC, "qa")
    assert render(Q, "context_qa") == ("Context: \nQuestion: What is a bond?\nAnswer:", " A loan to an issuer.")


def test_alpaca_layouts():
    p, c = render(Q, "alpaca")
    assert p == ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                 "request.\n\n### Instruction:\nWhat is a bond?\n\n### Response:\n")
    assert c == "A loan to an issuer."
    p, _ = render(QC, "alpaca")
    assert p.endswith("### Instruction:\nWhat is the P/E?\n\n### Input:\nPrice 40, EPS 2.\n\n### Response:\n")


def test_mistral_layout_with_system_prompt_and_history():
    assert render(Q, "mistral") == ("[INST] What is a bond? [/INST]", " A loan to an issuer.")
    assert render(Q, "mistral", system_prompt="Be brief.")[0] == "[INST] Be brief.\n\nWhat is a bond? [/INST]"
    multi = Example("And a stock?", "Ownership.", meta={"history": [{"role": "user", "content": "What is a bond?"},
                                                                   {"role": "assistant", "content": "A loan."}]})
    assert render(multi, "mistral")[0] == "[INST] What is a bond? [/INST] A loan. [INST] And a stock? [/INST]"


def test_whole_text_examples_train_on_everything_in_every_template():
    raw = Example("", "Plain finance text with no answer marker.")
    for name in TEMPLATES:
        assert render(raw, name) == ("", "Plain finance text with no answer marker.")


@pytest.fixture(scope="module")
def chat_tokenizer():
    pytest.importorskip("tokenizers")
    from quantgrid.ml.models import train_tokenizer

    return train_tokenizer(["Question: what is a bond? Answer: a loan."] * 20, vocab_size=300)


def test_chat_uses_the_tokenizers_template(chat_tokenizer):
    prompt, completion = render(QC, "chat", chat_tokenizer, system_prompt="You are careful.")
    assert prompt == ("<s><|system|>\nYou are careful.</s>\n<|user|>\nContext: Price 40, EPS 2.\n\nQuestion: What is "
                      "the P/E?</s>\n<|assistant|>\n")
    assert completion == "20."  # no eos: the tokenization code appends it
    expected = chat_tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are careful."},
         {"role": "user", "content": "Context: Price 40, EPS 2.\n\nQuestion: What is the P/E?"}],
        tokenize=False, add_generation_prompt=True)
    assert prompt == expected
    # The example's own system message (OpenAI records) wins over the recipe's.
    own = Example("Hi?", "Hello.", meta={"system": "Be brief."})
    assert render(own, "chat", chat_tokenizer, system_prompt="Other.")[0].startswith("<s><|system|>\nBe brief.</s>")


def test_chat_without_a_tokenizer_is_a_clear_error():
    with pytest.raises(ConfigError) as e:
        render(Q, "chat")
    assert e.value.message == "the 'chat' prompt template needs a tokenizer with a chat template"


def test_unknown_template():
    with pytest.raises(ConfigError) as e:
        render(Q, "llama3")
    assert e.value.message == "unknown prompt template 'llama3'"


def test_render_text_is_prompt_plus_completion():
    assert render_text(Q, "qa") == "Question: What is a bond?\nAnswer: A loan to an issuer."
