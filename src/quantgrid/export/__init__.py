"""Export an adapter or base to other runtimes: GGUF (llama.cpp, Ollama), an Ollama
Modelfile, a merged Hugging Face model."""

from __future__ import annotations

from pathlib import Path

from quantgrid.errors import ExportError


def base_config(base: str | Path, *, what: str):
    """The base's config without touching the network: a base that is neither a local
    directory nor in the Hugging Face cache fails at once, naming the flag."""
    from quantgrid.errors import ModelError
    from quantgrid.ml.models import load_config

    if Path(base).is_dir():
        return load_config(str(base))  # a local directory: its own errors are the precise ones
    try:
        return load_config(str(base), local_only=True)
    except ModelError:
        raise ExportError(f"{what} needs the base model, and base {str(base)!r} is not on this machine "
                          "(not a local directory, not in the Hugging Face cache; nothing is downloaded)",
                          hint="pass --base DIR (the base model directory the adapter was trained on), or put the "
                               f"base in the Hugging Face cache first: huggingface-cli download {base}") from None
