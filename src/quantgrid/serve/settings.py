"""Server settings: one pydantic model for the ``quantgrid serve`` flags (each field is one,
see :mod:`quantgrid.settings`) and ``create_app(settings)``."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from quantgrid.serve.upstream import UpstreamConfig


def _local_enabled_default() -> bool:
    # BullishAI's switch: LOCAL_PYTORCH_ENABLED=false sends every request to the upstreams.
    return os.environ.get("LOCAL_PYTORCH_ENABLED", "true").strip().lower() not in ("0", "false", "no", "off")


class ServeSettings(BaseModel):
    base: str | None = Field(None, description="base model: a Hugging Face id or a local directory")
    release: str | None = Field(None, description="release to serve as the 'quantgrid' model: a directory, "
                                "'latest' or YYYY.WW (the last two need --hub)")
    adapters: dict[str, str] = Field(default_factory=dict, description="NAME=DIR: serve an adapter as "
                                     "'quantgrid:NAME' (repeatable)", json_schema_extra={"flag": "--adapter"})
    hub: str | None = Field(None, description="hub URL: resolve --release there and auto-deploy new releases")
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="uvicorn log level")
    poll_interval_s: float = Field(300.0, gt=0, description="seconds between hub release checks",
                                   json_schema_extra={"flag": "--poll-interval"})
    release_cache: str = Field("~/.cache/quantgrid/releases", description="where downloaded releases go")
    device: str | None = Field(None, description="cpu, cuda, cuda:1... (default: cuda if available)")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype of the base weights (default: bfloat16 on CUDA, float32 on CPU)")
    max_batch: int = Field(16, ge=1, description="requests decoded together")
    max_slots: int = Field(8, ge=1, description="adapters held in memory at once (LRU)")
    lora_rank: int = Field(16, ge=1, description="initial slot rank; grows for larger adapters")
    default_max_tokens: int = Field(512, ge=1, description="longest answer when a request sets no max_tokens")
    local_enabled: bool = Field(default_factory=_local_enabled_default,
                                description="run the local engine; off sends everything to the upstreams "
                                "(default: $LOCAL_PYTORCH_ENABLED, else on)",
                                json_schema_extra={"flag": "--local/--no-local"})
    local_timeout_s: float = Field(30.0, gt=0, description="seconds to the first local token before using an upstream",
                                   json_schema_extra={"flag": "--local-timeout"})
    upstreams: list[UpstreamConfig] = Field(
        default_factory=list, description="fallback: NAME=URL[,key_env=VAR][,model=M], URL ending in /v1; "
        "repeatable, tried in order", json_schema_extra={"flag": "--upstream"})
    router_method: Literal["profile", "arrow", "keywords"] = Field(
        "profile", description="how 'auto' picks an adapter: profile (its training questions' words), "
        "arrow (LoRA directions) or keywords (its description)", json_schema_extra={"flag": "--router"})
    router_threshold: float | None = Field(None, description="minimum routing score "
                                           "(default: 0.35 profile, 0.2 arrow, 0.34 keywords)")
    auto_fallback: Literal["release", "upstream"] = Field(
        "release", description="where 'auto' requests go when no adapter fits")
    api_key: SecretStr | None = Field(
        default_factory=lambda: SecretStr(k) if (k := os.environ.get("QUANTGRID_API_KEY")) else None,
        description="require 'Authorization: Bearer KEY' on /v1 and /api (default: $QUANTGRID_API_KEY)")
    cors_origins: list[str] = Field(default_factory=list,
                                    description="browser origins allowed by CORS ('*' for any); none: CORS off")
    ollama: bool = Field(False, description="listen on Ollama's port 11434 instead of --port")
    ab: str | None = Field(None, description="A/B split of 'quantgrid' requests, ARM=WEIGHT,...: an arm is a served "
                           "model name or upstream:NAME (e.g. quantgrid=0.9,upstream:primary=0.1)")
    feedback_store: str | None = Field(None, description="opt-in: append rated exchanges (question, answer, rating) "
                                       "to this local JSONL file; nothing is sent anywhere")
    context_provider: str | None = Field(None, description="fill <PRICE>, <CHANGE>, <TIMESTAMP> in answers from "
                                         "file:QUOTES.json|csv or an http(s) quote URL containing {symbol}")

    @field_validator("adapters", mode="before")
    @classmethod
    def _adapter_specs(cls, v):
        # The command line gives NAME=DIR strings; YAML and Python may give the mapping.
        if not isinstance(v, (list, tuple)):
            return v
        out: dict[str, str] = {}
        for spec in v:
            name, sep, path = str(spec).partition("=")
            if not sep or not name or not path:
                raise ValueError(f"{spec!r} is not NAME=DIR, e.g. options=./adapters/options")
            if name in out:
                raise ValueError(f"adapter name {name!r} is given twice; give each adapter its own name")
            out[name] = path
        return out

    @field_validator("upstreams", mode="before")
    @classmethod
    def _upstream_specs(cls, v):
        if isinstance(v, (list, tuple)):
            return [UpstreamConfig.parse_spec(u) if isinstance(u, str) else u for u in v]
        return v

    @field_validator("adapters")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not name or ":" in name or "/" in name:
                raise ValueError(f"adapter name {name!r} must be non-empty, without ':' or '/'")
        return v
