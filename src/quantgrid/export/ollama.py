"""An Ollama Modelfile for a base GGUF plus a GGUF LoRA adapter.

The TEMPLATE is the Go-template twin of quantgrid's prompt template
(``quantgrid.data.modelfile``), so Ollama builds exactly the prompt the adapter was
trained on, for every turn of a conversation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantgrid.data.modelfile import TRAINS_WITH_SYSTEM, Modelfile, go_template, stop_words
from quantgrid.export.settings import ModelfileSettings


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
    s = settings or ModelfileSettings(system=system, temperature=temperature, top_p=top_p, num_ctx=num_ctx)
    if chat_template is None and tokenizer is not None:
        chat_template = getattr(tokenizer, "chat_template", None)
    name = recipe.prompt_template
    template = go_template(name, chat_template)
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
