"""Prompt templates: an Example -> (prompt_text, completion_text).

The training text is ``prompt_text + completion_text`` and the loss is computed on the
completion only. The end-of-sequence token is appended by the tokenization code, not
here, so the same strings serve training, proof of loss and generation (which feeds
``prompt_text`` and stops at eos).

Templates are a registry (``TEMPLATES``). ``qa`` is the BullishAI layout and switches
to ``context_qa`` when an example has context. ``chat`` uses the tokenizer's own chat
template. An example with an empty prompt (a ``{"text"}`` record with no answer
marker) trains on its whole text under every template: ``("", text)``.

Serving gets chat messages, not Examples: ``example_from_messages`` reads them the way
the training reader reads an OpenAI ``messages`` record, and ``render_messages`` gives
the prompt training would have rendered (``quantgrid.data.chat_template`` writes the
same thing as a Jinja chat template for other programs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quantgrid.data.types import Example
from quantgrid.errors import ConfigError

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.")

# A grounded user turn, as the chat prompt (and the messages record writer) lays it out.
CONTEXT_USER_RE = re.compile(r"Context: (?P<c>.*?)\n\nQuestion: (?P<q>.*)", re.S)
SYSTEM_ROLES = ("system", "developer")  # OpenAI's newer name for the system role

Renderer = Callable[[Example, Any, "str | None"], tuple[str, str]]
TEMPLATES: dict[str, Renderer] = {}


def template(name: str) -> Callable[[Renderer], Renderer]:
    def deco(fn: Renderer) -> Renderer:
        TEMPLATES[name] = fn
        return fn
    return deco


def _history_lines(ex: Example) -> str:
    """Earlier chat turns (OpenAI messages records) as Question/Answer lines."""
    lines = []
    for m in ex.meta.get("history", []):
        lines.append(f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}")
    return "\n".join(lines) + "\n" if lines else ""


@template("qa")
def _qa(ex: Example, tokenizer: Any, system_prompt: str | None) -> tuple[str, str]:
    if ex.context:
        return _context_qa(ex, tokenizer, system_prompt)
    return f"{_history_lines(ex)}Question: {ex.prompt}\nAnswer:", " " + ex.completion.lstrip()


@template("context_qa")
def _context_qa(ex: Example, tokenizer: Any, system_prompt: str | None) -> tuple[str, str]:
    context = ex.context or ""
    return f"Context: {context}\n{_history_lines(ex)}Question: {ex.prompt}\nAnswer:", " " + ex.completion.lstrip()


@template("alpaca")
def _alpaca(ex: Example, tokenizer: Any, system_prompt: str | None) -> tuple[str, str]:
    instruction = _history_lines(ex) + ex.prompt
    if ex.context:
        prompt = (f"{ALPACA_PREAMBLE_INPUT}\n\n### Instruction:\n{instruction}\n\n"
                  f"### Input:\n{ex.context}\n\n### Response:\n")
    else:
        prompt = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    return prompt, ex.completion.lstrip()


def _user_text(ex: Example) -> str:
    return f"Context: {ex.context}\n\nQuestion: {ex.prompt}" if ex.context else ex.prompt


@template("mistral")
def _mistral(ex: Example, tokenizer: Any, system_prompt: str | None) -> tuple[str, str]:
    # Mistral-Instruct has no system role: the system text leads the first [INST].
    system = ex.meta.get("system") or system_prompt
    turns, parts = list(ex.meta.get("history", [])), []
    first = True
    for i in range(0, len(turns) - 1, 2):
        user = turns[i]["content"]
        if first and system:
            user, first = f"{system}\n\n{user}", False
        parts.append(f"[INST] {user} [/INST] {turns[i + 1]['content']}")
    user = _user_text(ex)
    if first and system:
        user = f"{system}\n\n{user}"
    parts.append(f"[INST] {user} [/INST]")
    return " ".join(parts), " " + ex.completion.lstrip()


@template("chat")
def _chat(ex: Example, tokenizer: Any, system_prompt: str | None) -> tuple[str, str]:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the 'chat' prompt template needs a tokenizer with a chat template",
                          hint="use a base whose tokenizer has one, or set prompt_template to qa / mistral / alpaca")
    messages = []
    system = ex.meta.get("system") or system_prompt
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": m["role"], "content": m["content"]} for m in ex.meta.get("history", [])]
    messages.append({"role": "user", "content": _user_text(ex)})
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt, ex.completion


def render(example: Example, template: str, tokenizer: Any = None,
           system_prompt: str | None = None) -> tuple[str, str]:
    """(prompt_text, completion_text) of ``example`` in ``template``; train on ``prompt + completion``."""
    if template not in TEMPLATES:
        raise ConfigError(f"unknown prompt template {template!r}", hint=f"choose one of {', '.join(TEMPLATES)}")
    if not example.prompt:
        return "", example.completion
    return TEMPLATES[template](example, tokenizer, system_prompt)


def render_text(example: Example, template: str, tokenizer: Any = None, system_prompt: str | None = None) -> str:
    prompt, completion = render(example, template, tokenizer, system_prompt)
    return prompt + completion


def split_context(user_text: str) -> tuple[str, str | None]:
    """(question, context) of a user turn; context is None unless it reads ``Context: …\n\nQuestion: …``."""
    m = CONTEXT_USER_RE.fullmatch(user_text)
    return (m.group("q"), m.group("c")) if m else (user_text, None)


def example_from_messages(messages: Sequence[Mapping[str, Any]]) -> Example:
    """The Example (no completion) a chat request stands for: the last user turn is the
    question, system turns the system prompt, the turns before it the history.

    The same reading as a training ``messages`` record, so the prompt is the trained one.
    """
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str):
            raise ConfigError(f"messages[{i}].content must be text, got {type(content).__name__}",
                              hint="send the message text as a string (or as text content parts)")
        if role in SYSTEM_ROLES:
            system.append(content)
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": content})
        else:
            raise ConfigError(f"messages[{i}] has role {role!r}, which this model was not trained with",
                              hint="use system, user and assistant messages")
    if not turns or turns[-1]["role"] != "user":
        raise ConfigError("the last message must be the user's (role 'user')",
                          hint="end the conversation with the question to answer")
    question, context = split_context(turns[-1]["content"])
    if not question.strip():
        raise ConfigError("the last user message has no question", hint="send the question as the last user message")
    meta: dict[str, Any] = {}
    if system:
        meta["system"] = "\n".join(system)
    if turns[:-1]:
        meta["history"] = turns[:-1]
    return Example(prompt=question, completion="", context=context, meta=meta)


def render_messages(messages: Sequence[Mapping[str, Any]], template: str, tokenizer: Any = None,
                    system_prompt: str | None = None) -> str:
    """The prompt text training renders for this conversation (generation starts after it)."""
    return render(example_from_messages(messages), template, tokenizer, system_prompt)[0]
