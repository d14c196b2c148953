"""The settings of each export (``quantgrid export merged|gguf|ollama``): one model per
command, whose fields are its flags. Imports only pydantic."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# The GGUF tensor types, here (not in the gguf module, which imports numpy) so the help lists
# exactly what the exporter accepts. Written by the gguf package directly:
WRITER_OUTTYPES = ("f32", "f16", "q8_0")
# Produced by llama.cpp's quantizer (llama_model_quantize) from an f16 file: base models only.
LLAMA_QUANT_OUTTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
                        "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
OUTTYPES = (*WRITER_OUTTYPES, *LLAMA_QUANT_OUTTYPES)

_OUTTYPE = (f"tensor type for 2-D weights: {', '.join(WRITER_OUTTYPES)} (norms stay f32); a base may also be "
            f"{', '.join(LLAMA_QUANT_OUTTYPES)} (quantized by llama.cpp)")
_BASE = "base model id or path (default: the adapter's recipe)"


class _Export(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MergedExport(_Export):
    adapter: Path = Field(..., description="adapter directory to merge")
    out: Path = Field(..., description="output Hugging Face model directory")
    base: str | None = Field(None, description=_BASE)
    overwrite: bool = Field(False, description="replace an existing output directory")


class GGUFExport(_Export):
    out: Path = Field(..., description="output .gguf file")
    base: str | None = Field(None, description="base model id or path; alone: export the base")
    adapter: Path | None = Field(None, description="adapter directory: export it as a GGUF LoRA adapter")
    outtype: str = Field("f16", description=_OUTTYPE)


class ModelfileSettings(BaseModel):
    """What ``quantgrid export ollama`` lets the user set in the Modelfile."""

    system: str | None = Field(None, description="SYSTEM prompt (default: the recipe's, for templates trained "
                               "with one: mistral, chat)")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="PARAMETER temperature")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="PARAMETER top_p")
    num_ctx: int | None = Field(None, ge=16, description="PARAMETER num_ctx (default: the recipe's max_seq_length)")


class OllamaExport(_Export, ModelfileSettings):
    adapter: Path = Field(..., description="adapter (or release) directory")
    out: Path = Field(..., description="output directory for Modelfile, adapter.gguf (and base.gguf)")
    base: str | None = Field(None, description=_BASE)
    from_model: str | None = Field(None, description="FROM line: an Ollama model name or a base GGUF path "
                                   "(default: export the base to OUT/base.gguf)", json_schema_extra={"flag": "--from"})
    outtype: str = Field("f16", description=_OUTTYPE)
    name: str = Field("quantgrid", description="model name for the printed `ollama create` command")
