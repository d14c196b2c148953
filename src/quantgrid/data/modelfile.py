"""The recipe's prompt in Ollama's terms: the Go TEMPLATE twin of ``quantgrid.data.prompts``,
the stop words, and the Modelfile text.

Ollama renders a Modelfile's TEMPLATE once per user/assistant pair of a conversation and
stops the last one at ``.Response``, where the model answers; earlier answers come back
through ``{{ .Response }}``. ``alpaca`` folds the history into one instruction, as training
does, so it walks ``.Messages`` instead. ``quantgrid export ollama`` writes these into the
Modelfile and ``quantgrid serve`` answers them from ``/api/show``. The stop words are the
base tokenizer's end-of-sequence token plus the marker that would start a new turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quantgrid.data.chat_template import CHAT_TEMPLATE
from quantgrid.data.prompts import ALPACA_PREAMBLE

_QA = "Question: {{ .Prompt }}\nAnswer:{{ if .Response }} {{ .Response }}\n{{ end }}"
# Go-template twins of quantgrid.data.prompts. `.Prompt` is a user turn, `.Response` the
# answer that followed it and `.System` the system prompt (first turn only). qa and alpaca
# train without a system prompt; a SYSTEM given anyway leads the prompt on its own line.
GO_TEMPLATES = {
    "qa": "{{ if .System }}{{ .System }}\n{{ end }}" + _QA,
    "context_qa": "{{ if .System }}{{ .System }}\n{{ end }}" + _QA,  # the context travels in the prompt
    "alpaca": (ALPACA_PREAMBLE + "\n\n### Instruction:\n{{ if .System }}{{ .System }}\n{{ end }}"
               "{{ range $i, $m := .Messages }}{{ if eq .Role \"user\" }}"
               "{{ if eq (len (slice $.Messages $i)) 1 }}{{ .Content }}{{ else }}Question: {{ .Content }}\n{{ end }}"
               "{{ else if eq .Role \"assistant\" }}Answer: {{ .Content }}\n{{ end }}{{ end }}"
               "\n\n### Response:\n"),
    "mistral": ("[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]"
                "{{ if .Response }} {{ .Response }} {{ end }}"),
    # Only for the tiny base's own chat template (CHAT_TEMPLATE); a real model's Jinja chat
    # template is embedded in the GGUF, and Ollama reads it from there (see go_template).
    "chat": ("{{ if .System }}<|system|>\n{{ .System }}</s>\n{{ end }}<|user|>\n{{ .Prompt }}</s>\n<|assistant|>\n"
             "{{ if .Response }}{{ .Response }}</s>\n{{ end }}"),
}
TRAINS_WITH_SYSTEM = ("mistral", "chat")  # the others' training prompts have no system text
# What would open the next turn: the model must stop before writing it.
TURN_MARKERS = {"qa": ["\nQuestion:"], "context_qa": ["\nQuestion:"], "alpaca": ["### Instruction:"],
                "mistral": ["[INST]"], "chat": ["<|user|>"]}


def stop_words(template: str, tokenizer: Any = None) -> list[str]:
    """The base's end-of-sequence token (``</s>`` when no tokenizer is given) and the turn marker."""
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else "</s>"
    words = [eos] if eos else []
    return words + [m for m in TURN_MARKERS.get(template, []) if m not in words]


def go_template(name: str, base_chat_template: str | None) -> str | None:
    """The Go twin of prompt template ``name`` on a base whose tokenizer has
    ``base_chat_template``; None where Ollama should use the template embedded in the GGUF
    ("chat" renders the base's own chat template, whose twin is known for the tiny base only)."""
    return GO_TEMPLATES[name] if name != "chat" or base_chat_template == CHAT_TEMPLATE else None


@dataclass
class Modelfile:
    """A Modelfile's instructions; ``render`` gives its text."""

    from_: str
    adapter: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, object] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"FROM {self.from_}"]
        if self.adapter:
            lines.append(f"ADAPTER {self.adapter}")
        if self.template:
            lines.append(f'TEMPLATE """{self.template}"""')
        if self.system:
            lines.append(f'SYSTEM """{self.system}"""')
        lines += [f"PARAMETER {line}" for line in self.parameter_lines()]
        return "\n".join(lines) + "\n"

    def parameter_lines(self) -> list[str]:
        """``key value`` per parameter value (a list gives one line per item), as Ollama lists them."""
        return [f"{key} {_quote(v)}" for key, value in self.parameters.items()
                for v in (value if isinstance(value, list) else [value])]


def _quote(v: object) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"' if isinstance(v, str) \
        else str(v)
