"""Server settings: one pydantic model for the CLI flags and ``create_app(settings)``."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from quantgrid.serve.upstream import UpstreamConfig


def _local_enabled_default() -> bool:
    # BullishAI's switch: LOCAL_PYTORCH_ENABLED=false sends every request to the upstreams.
    return os.environ.get("LOCAL_PYTORCH_ENABLED", "true").strip().lower() not in ("0", "false", "no", "off")


class ServeSettings(BaseModel):
    base: str | None = Field(None, description="base model id or directory")
    release: str | None = Field(None, description="release: a directory, 'latest' or YYYY.WW (needs hub)")
    adapters: dict[str, str] = Field(default_factory=dict, description="adapter name -> directory")
    hub: str | None = Field(None, description="hub URL to resolve and auto-deploy releases from")
    poll_interval_s: float = Field(300.0, gt=0, description="how often to ask the hub for a new release")
    release_cache: str = Field("~/.cache/quantgrid/releases", description="where downloaded releases go")
    device: str | None = None
    dtype: str | None = None
    max_batch: int = Field(16, ge=1, description="rows decoded together")
    max_slots: int = Field(8, ge=1, description="adapters held in memory at once (LRU)")
    lora_rank: int = Field(16, ge=1, description="initial slot rank; grows for larger adapters")
    default_max_tokens: int = Field(512, ge=1)
    local_enabled: bool = Field(default_factory=_local_enabled_default)
    local_timeout_s: float = Field(30.0, gt=0, description="seconds to the first local token before falling back")
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    router_method: Literal["arrow", "keywords"] = "arrow"
    router_threshold: float | None = Field(None, description="minimum routing score; default per method")
    auto_fallback: Literal["release", "upstream"] = Field(
        "release", description="where 'auto' requests go when no adapter fits")

    @field_validator("adapters")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not name or ":" in name or "/" in name:
                raise ValueError(f"adapter name {name!r} must be non-empty, without ':' or '/'")
        return v
