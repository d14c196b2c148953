"""An Ollama Modelfile for a base GGUF plus a GGUF LoRA adapter.

The TEMPLATE is the Go-template twin of quantgrid's prompt template, so Ollama builds
exactly the prompt the adapter was trained on (``test_ollama`` checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Go templates for each recipe prompt template. `.Prompt` is the user turn and
# `.System` the SYSTEM line; the answer follows the template's last character.
GO_TEMPLATES = {
    "qa": "{{ if .System }}{{ .System }}\n\n{{ end }}Question: {{ .Prompt }}\nAnswer:",
    "context_qa": "{{ if .System }}{{ .System }}\n\n{{ end }}Question: {{ .Prompt }}\nAnswer:",
    "alpaca": "{{ if .System }}{{ .System }}\n\n{{ end }}### Instruction:\n{{ .Prompt }}\n\n### Response:\n",
    "mistral": "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]",
    "chat": ("{{ if .System }}<|system|>\n{{ .System }}</s>\n{{ end }}"
             "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n"),
}


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


def modelfile_for(recipe, *, from_: str, adapter: str | None, num_ctx: int | None = None,
                  temperature: float = 0.2, top_p: float = 0.9) -> Modelfile:
    """Modelfile for an adapter trained with ``recipe`` (a quantgrid.recipe.Recipe)."""
    return Modelfile(
        from_=from_,
        adapter=adapter,
        template=GO_TEMPLATES[recipe.prompt_template],
        system=recipe.system_prompt or None,
        parameters={"temperature": temperature, "top_p": top_p,
                    "num_ctx": num_ctx or recipe.training.max_seq_length, "stop": ["</s>", "\nQuestion:"]},
    )


def write_modelfile(path: str | Path, modelfile: Modelfile) -> Path:
    from quantgrid.utils import atomic_write_text

    return atomic_write_text(Path(path), modelfile.render())
