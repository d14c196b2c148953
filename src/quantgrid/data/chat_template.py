"""The recipe's prompt as a Jinja chat template, and the files that ship it.

Training renders an Example with ``quantgrid.data.prompts.render``. Every other program
that talks to an adapter (transformers' ``apply_chat_template``, vLLM's chat endpoint,
PEFT users, our own server) gets chat *messages* instead. ``chat_template`` writes a Jinja
template that turns messages into exactly the text ``render`` gives for the Example that
``prompts.example_from_messages`` builds from them, so every one of those programs
prompts the adapter the way it was trained:

* the system message (or the recipe's system prompt) where the template has one
  (``mistral``, ``chat``; ``qa``/``context_qa``/``alpaca`` train without it, so it is left out);
* earlier turns as the template's history lines;
* a last user message of the form ``Context: …\\n\\nQuestion: …`` as a grounded question;
* the tokenizer's start token when training's tokenization adds it (``{{ bos_token }}``),
  so ``apply_chat_template(tokenize=True)`` gives the training ids;
* a final assistant message (a whole training conversation) as the completion plus
  ``eos_token``: the full training text.

Jinja in transformers runs in an immutable sandbox (no ``list.append``), so lists are
built with ``+``; every tag strips whitespace and all text is written by ``{{ }}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantgrid.data.prompts import ALPACA_PREAMBLE, ALPACA_PREAMBLE_INPUT, TEMPLATES
from quantgrid.errors import ConfigError

CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# The offline tiny bases' own chat templates (quantgrid.ml.tiny sets them on the tokenizers):
# what the "chat" prompt template renders on those bases. A real base brings its own.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Qwen2's ChatML, for the tokenizer without a BOS token.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Messages -> ns.system, ns.history, ns.user (context split off), ns.answer.
_PARSE = """\
{%- set ns = namespace(system=[], turns=[], history=[], user=none, answer=none, context=none, question='') -%}
{%- for m in messages -%}
  {%- if m['role'] in ['system', 'developer'] -%}{%- set ns.system = ns.system + [m['content']] -%}
  {%- else -%}{%- set ns.turns = ns.turns + [m] -%}{%- endif -%}
{%- endfor -%}
{%- if ns.turns and ns.turns[-1]['role'] == 'assistant' -%}
  {%- set ns.answer = ns.turns[-1]['content'] -%}{%- set ns.turns = ns.turns[:-1] -%}
{%- endif -%}
{%- if ns.turns -%}
  {%- set ns.user = ns.turns[-1]['content'] -%}{%- set ns.history = ns.turns[:-1] -%}
{%- else -%}{%- set ns.user = '' -%}{%- endif -%}
{%- if ns.user.startswith('Context: ') and '\\n\\nQuestion: ' in ns.user[9:] -%}
  {%- set parts = ns.user[9:].split('\\n\\nQuestion: ', 1) -%}
  {%- set ns.context = parts[0] -%}{%- set ns.question = parts[1] -%}
{%- else -%}{%- set ns.question = ns.user -%}{%- endif -%}
{%- set ns.system = ns.system | join('\\n') -%}
{%- set ns.lines = '' -%}
{%- for m in ns.history -%}
  {%- set ns.lines = ns.lines + ('Question' if m['role'] == 'user' else 'Answer') + ': ' + m['content'] + '\\n' -%}
{%- endfor -%}
"""

_QA = """\
{%- if ns.question -%}
  {%- if ns.context or force_context -%}{{- 'Context: ' + (ns.context or '') + '\\n' -}}{%- endif -%}
  {{- ns.lines + 'Question: ' + ns.question + '\\nAnswer:' -}}
{%- endif -%}
{%- if ns.answer is not none -%}{{- (' ' + ns.answer.lstrip()) if ns.question else ns.answer -}}{{- eos_token -}}{%- endif -%}
"""

_ALPACA = """\
{%- if ns.question -%}
  {%- if ns.context -%}
    {{- PREAMBLE_INPUT + '\\n\\n### Instruction:\\n' + ns.lines + ns.question + '\\n\\n### Input:\\n' + ns.context
        + '\\n\\n### Response:\\n' -}}
  {%- else -%}
    {{- PREAMBLE + '\\n\\n### Instruction:\\n' + ns.lines + ns.question + '\\n\\n### Response:\\n' -}}
  {%- endif -%}
{%- endif -%}
{%- if ns.answer is not none -%}{{- ns.answer.lstrip() if ns.question else ns.answer -}}{{- eos_token -}}{%- endif -%}
"""

_MISTRAL = """\
{%- set ms = namespace(system=(ns.system or DEFAULT_SYSTEM), first=true, parts=[]) -%}
{%- if ns.question -%}
  {%- for i in range(0, ns.history | length - 1, 2) -%}
    {%- set u = ns.history[i]['content'] -%}
    {%- if ms.first and ms.system -%}{%- set u = ms.system + '\\n\\n' + u -%}{%- set ms.first = false -%}{%- endif -%}
    {%- set ms.parts = ms.parts + ['[INST] ' + u + ' [/INST] ' + ns.history[i + 1]['content']] -%}
  {%- endfor -%}
  {%- set u = ('Context: ' + ns.context + '\\n\\nQuestion: ' + ns.question) if ns.context else ns.question -%}
  {%- if ms.first and ms.system -%}{%- set u = ms.system + '\\n\\n' + u -%}{%- endif -%}
  {{- (ms.parts + ['[INST] ' + u + ' [/INST]']) | join(' ') -}}
{%- endif -%}
{%- if ns.answer is not none -%}{{- (' ' + ns.answer.lstrip()) if ns.question else ns.answer -}}{{- eos_token -}}{%- endif -%}
"""

# The base tokenizer's own template, fed the messages training gives it.
_CHAT_HEAD = """\
{%- set sys = ns.system or DEFAULT_SYSTEM -%}
{%- set u = ('Context: ' + ns.context + '\\n\\nQuestion: ' + ns.question) if ns.context else ns.question -%}
{%- set qg_answer = ns.answer -%}
{%- set messages = ([{'role': 'system', 'content': sys}] if sys else []) + ns.history
    + [{'role': 'user', 'content': u}] -%}
{%- set add_generation_prompt = true -%}
"""


def _literal(s: str | None) -> str:
    """A Jinja string literal for ``s`` (Jinja decodes Python-style escapes)."""
    if s is None:
        return "none"
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) > 126:
            out.append(f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def adds_bos(tokenizer: Any) -> bool:
    """True when ``tokenizer(text)`` (training's call) puts the start token first."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return len(with_special) > len(without) and with_special[0] == bos


def chat_template(template: str, *, system_prompt: str | None = None, tokenizer: Any = None) -> str:
    """Jinja source rendering chat messages as ``template`` renders the same conversation.

    ``tokenizer`` is the base's: it decides whether the text starts with ``bos_token``
    and, for ``chat``, supplies the tokenizer's own chat template.
    """
    if template not in TEMPLATES:
        raise ConfigError(f"unknown prompt template {template!r}", hint=f"choose one of {', '.join(TEMPLATES)}")
    head = f"{{%- set DEFAULT_SYSTEM = {_literal(system_prompt or '')} -%}}\n" + _PARSE
    if template == "chat":
        base = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        if not isinstance(base, str) or not base:
            raise ConfigError("the 'chat' prompt template needs a tokenizer with a chat template",
                              hint="use a base whose tokenizer has one, or set prompt_template to qa / mistral / alpaca")
        # The tokenizer's template writes its own start token; the answer follows its generation prompt.
        tail = "{%- if qg_answer is not none -%}{{- qg_answer -}}{{- eos_token -}}{%- endif -%}"
        return head + _CHAT_HEAD + base + tail
    bos = "{{- bos_token -}}\n" if adds_bos(tokenizer) else ""
    if template in ("qa", "context_qa"):
        body = f"{{%- set force_context = {'true' if template == 'context_qa' else 'false'} -%}}\n" + _QA
    elif template == "alpaca":
        body = (f"{{%- set PREAMBLE = {_literal(ALPACA_PREAMBLE)} -%}}\n"
                f"{{%- set PREAMBLE_INPUT = {_literal(ALPACA_PREAMBLE_INPUT)} -%}}\n" + _ALPACA)
    else:
        body = _MISTRAL
    return head + bos + body


def save_chat_template(out_dir: str | Path, tokenizer: Any, template: str, system_prompt: str | None) -> str:
    """Write the base tokenizer into ``out_dir`` with the recipe's chat template.

    transformers writes ``chat_template.jinja`` next to the tokenizer files; the template
    also goes into ``tokenizer_config.json`` (``chat_template``), where older transformers
    and vLLM look. ``AutoTokenizer.from_pretrained(out_dir)`` then prompts like training.
    The tokenizer object passed in is left as it was. Returns the template.
    """
    import json

    source = chat_template(template, system_prompt=system_prompt, tokenizer=tokenizer)
    out = Path(out_dir)
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = source
        tokenizer.save_pretrained(str(out))
    finally:
        tokenizer.chat_template = original
    (out / CHAT_TEMPLATE_FILE).write_text(source, encoding="utf-8")  # whatever this transformers version wrote
    config_path = out / TOKENIZER_CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["chat_template"] = source
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    return source
