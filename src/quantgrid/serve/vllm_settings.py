"""The settings of ``quantgrid vllm command`` and ``quantgrid vllm deploy``: one model per
command, whose fields are its flags (and keyword arguments). Imports only pydantic."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

RELEASE_CACHE = "~/.cache/quantgrid/releases"


class _Vllm(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VllmCommandSettings(_Vllm):
    base: str = Field(..., description="base model directory (or Hugging Face id) vLLM loads")
    adapters: list[str] = Field(default_factory=list, description="NAME=PATH of an adapter vLLM serves as model "
                                "NAME; repeat for more", json_schema_extra={"flag": "--adapter"})
    hub: str | None = Field(None, description="hub URL to resolve --release on")
    release: str | None = Field(None, description="release served as model 'quantgrid': 'latest', a version "
                                "YYYY.WW (with --hub), or a release directory")
    release_cache: str = Field(RELEASE_CACHE, description="where downloaded releases go")
    host: str = Field("127.0.0.1", description="address vLLM listens on")
    port: int = Field(8000, ge=1, le=65535, description="port vLLM listens on")
    python: str | None = Field(None, description="python of vLLM's virtualenv (default: .venv-vllm/bin/python "
                               "if present, else python)")
    max_lora_rank: int | None = Field(None, ge=1, description="room for larger releases swapped in later "
                                      "(default: the largest adapter's rank, rounded up to a rank vLLM accepts)")
    max_loras: int | None = Field(None, ge=1, description="adapters in one batch (default: all of them)")
    chat_template: Path | None = Field(None, description="Jinja chat template (default: the release's, or the "
                                       "first adapter's, chat_template.jinja)")
    run: bool = Field(False, description="exec the command (with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, so "
                      "`quantgrid vllm deploy` can swap releases) instead of printing it")


class VllmDeploySettings(_Vllm):
    vllm_url: str = Field(..., description="the running vLLM server, e.g. http://127.0.0.1:8000")
    hub: str = Field(..., description="hub URL whose latest release is deployed")
    interval: float = Field(300.0, ge=0.1, description="seconds between release checks")
    release_cache: str = Field(RELEASE_CACHE, description="where downloaded releases go")
    max_lora_rank: int | None = Field(None, ge=1, description="the server's --max-lora-rank: refuse larger "
                                      "releases before unloading the served one")
    api_key: SecretStr | None = Field(
        default_factory=lambda: SecretStr(k) if (k := os.environ.get("VLLM_API_KEY")) else None,
        description="vLLM's --api-key, if it has one (default: $VLLM_API_KEY)")
    once: bool = Field(False, description="check once and exit (1 if the swap failed)")
