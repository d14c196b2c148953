"""An Ollama Modelfile for a base GGUF plus a GGUF LoRA adapter.

The TEMPLATE is the Go-template twin of quantgrid's prompt template, so Ollama builds
exactly the prompt the adapter was trained on, for every turn of a conversation: earlier
answers come back through ``{{ .Response }}`` (Ollama renders the template once per
user/assistant pair and stops the last one at ``.Response``, where the model answers).
``alpaca`` folds the history into one instruction, as training does, so it walks
``.Messages`` instead. The stop words are the base tokenizer's end-of-sequence token
plus the marker that would start a new turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgrid.data.prompts import ALPACA_PREAMBLE
from quantgrid.export.settings import ModelfileSettings

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
    # Only for the tiny base's own chat template (quantgrid.ml.models.CHAT_TEMPLATE); a real
    # model's Jinja chat template is embedded in the GGUF, and Ollama reads it from there.
    "chat": ("{{ if .System }}<|system|>\n{{ .System }}</s>\n{{ end }}<|user|>\n{{ .Prompt }}</s>\n<|assistant|>\n"
             "{{ if .Response }}{{ .Response }}</s>\n{{ end }}"),
}
TRAINS_WITH_SYSTEM = ("mistral", "chat")  # the others' training prompts have no system text
# What would open the next turn: the model must stop before writing it.
TURN_MARKERS = {"qa": ["\nQuestion:"], "context_qa": ["\nQuestion:"], "alpaca": ["### Instruction:"],
                "mistral": ["[INST]"], "chat": ["<|user|>"]}


@dataclass
class Modelfile:
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
        for key, value in self.parameters.items():
            for v in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {key} {_quote(v)}")
        return "\n".join(lines) + "\n"


def _quote(v: object) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"' if isinstance(v, str) \
        else str(v)


def stop_words(template: str, tokenizer: Any = None) -> list[str]:
    """The base's end-of-sequence token (``</s>`` when no tokenizer is given) and the turn marker."""
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else "</s>"
    words = [eos] if eos else []
    return words + [m for m in TURN_MARKERS.get(template, []) if m not in words]


def modelfile_for(recipe, *, from_: str, adapter: str | None, chat_template: str | None = None,
                  num_ctx: int | None = None, temperature: float = 0.2, top_p: float = 0.9,
                  tokenizer: Any = None, system: str | None = None,
                  settings: ModelfileSettings | None = None) -> Modelfile:
    """Modelfile for an adapter trained with ``recipe`` (a quantgrid.recipe.Recipe).

    ``chat_template`` is the base tokenizer's (read from ``tokenizer`` when given); for the
    "chat" prompt template we write a TEMPLATE only when it is the tiny base's, and otherwise
    let Ollama use the GGUF's. ``settings`` (or the keyword arguments) set SYSTEM and the
    PARAMETER lines; SYSTEM defaults to the recipe's for templates trained with one.
    """
    from quantgrid.ml.models import CHAT_TEMPLATE

    s = settings or ModelfileSettings(system=system, temperature=temperature, top_p=top_p, num_ctx=num_ctx)
    if chat_template is None and tokenizer is not None:
        chat_template = getattr(tokenizer, "chat_template", None)
    name = recipe.prompt_template
    template = GO_TEMPLATES[name] if name != "chat" or chat_template == CHAT_TEMPLATE else None
    default_system = (recipe.system_prompt or None) if name in TRAINS_WITH_SYSTEM else None
    return Modelfile(
        from_=from_,
        adapter=adapter,
        template=template,
        system=s.system if s.system is not None else default_system,
        parameters={"temperature": s.temperature, "top_p": s.top_p,
                    "num_ctx": s.num_ctx or recipe.training.max_seq_length, "stop": stop_words(name, tokenizer)},
    )


def write_modelfile(path: str | Path, modelfile: Modelfile) -> Path:
    from quantgrid.utils import atomic_write_text

    return atomic_write_text(Path(path), modelfile.render())
