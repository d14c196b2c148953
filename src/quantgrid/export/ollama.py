"""An Ollama Modelfile for a base GGUF plus a GGUF LoRA adapter.

The TEMPLATE is the Go-template twin of quantgrid's prompt template, so Ollama builds
exactly the prompt the adapter was trained on (``test_ollama`` checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quantgrid.data.prompts import ALPACA_PREAMBLE

# Go-template twins of quantgrid.data.prompts for a single user turn. `.Prompt` is the
# user turn and `.System` the SYSTEM line; the answer follows the template's last
# character. qa/alpaca ignore the system prompt in training, so they do here too.
GO_TEMPLATES = {
    "qa": "Question: {{ .Prompt }}\nAnswer:",
    "context_qa": "Question: {{ .Prompt }}\nAnswer:",  # the context travels inside the user's prompt
    "alpaca": ALPACA_PREAMBLE + "\n\n### Instruction:\n{{ .Prompt }}\n\n### Response:\n",
    "mistral": "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]",
    # Only for the tiny base's own chat template (quantgrid.ml.models.CHAT_TEMPLATE); a real
    # model's Jinja chat template is embedded in the GGUF, and Ollama reads it from there.
    "chat": ("{{ if .System }}<|system|>\n{{ .System }}</s>\n{{ end }}"
             "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n"),
}
USES_SYSTEM = ("mistral", "chat")


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
    return f'"{v}"' if isinstance(v, str) else str(v)


def modelfile_for(recipe, *, from_: str, adapter: str | None, chat_template: str | None = None,
                  num_ctx: int | None = None, temperature: float = 0.2, top_p: float = 0.9) -> Modelfile:
    """Modelfile for an adapter trained with ``recipe`` (a quantgrid.recipe.Recipe).

    ``chat_template`` is the base tokenizer's; for the "chat" prompt template we write a
    TEMPLATE only when it is the tiny base's, and otherwise let Ollama use the GGUF's.
    """
    from quantgrid.ml.models import CHAT_TEMPLATE

    name = recipe.prompt_template
    template = GO_TEMPLATES[name] if name != "chat" or chat_template == CHAT_TEMPLATE else None
    return Modelfile(
        from_=from_,
        adapter=adapter,
        template=template,
        system=(recipe.system_prompt or None) if name in USES_SYSTEM else None,
        parameters={"temperature": temperature, "top_p": top_p,
                    "num_ctx": num_ctx or recipe.training.max_seq_length, "stop": ["</s>", "\nQuestion:"]},
    )


def write_modelfile(path: str | Path, modelfile: Modelfile) -> Path:
    from quantgrid.utils import atomic_write_text

    return atomic_write_text(Path(path), modelfile.render())
