"""What each served model name is: family, parameter count, size on disk, digest.

``/api/tags``, ``/api/show`` and ``/api/ps`` (and ``/v1/models``) describe the same
names the router resolves. Numbers come from the loaded base (its parameters and their
dtype) and each adapter's weight file; the digest is the SHA-256 of the base's shape
fingerprint and the adapter's weights, so it changes when a release is swapped in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from quantgrid import lora_files
from quantgrid.errors import NotFound

_DTYPE_LEVEL = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int8": "Q8_0"}


@dataclass
class BaseCard:
    family: str
    parameters: int
    bytes: int
    quantization_level: str
    context_length: int
    fingerprint: str
    config: dict[str, Any]


@dataclass
class ModelCard:
    name: str
    base: BaseCard
    adapter: str | None
    adapter_path: Path | None
    size: int
    digest: str
    modified_at: str
    description: str = ""

    @property
    def parameter_size(self) -> str:
        return human_count(self.base.parameters)

    def details(self) -> dict[str, Any]:
        return {"parent_model": "base" if self.adapter else "", "format": "safetensors",
                "family": self.base.family, "families": [self.base.family],
                "parameter_size": self.parameter_size, "quantization_level": self.base.quantization_level}


def human_count(n: int) -> str:
    """Ollama's spelling of a parameter count: 7.2B, 350M, 1.3K."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def base_card(engine) -> BaseCard:
    cfg = engine.model.config
    params = list(engine.model.parameters())
    dtype = str(params[0].dtype).removeprefix("torch.") if params else "float32"
    fp = getattr(engine.base, "fingerprint", None) or hashlib.sha256(cfg.to_json_string().encode()).hexdigest()
    return BaseCard(family=str(getattr(cfg, "model_type", "unknown")), parameters=sum(p.numel() for p in params),
                    bytes=sum(p.numel() * p.element_size() for p in params),
                    quantization_level=_DTYPE_LEVEL.get(dtype, dtype.upper()),
                    context_length=engine.context_length, fingerprint=fp, config=cfg.to_dict())


@lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights(path: Path) -> Path:
    return path / lora_files.WEIGHTS


def card(state, name: str) -> ModelCard:
    """The card of a served model name; NotFound (404) for a name not served."""
    if state.router is None:
        raise NotFound(f"model '{name}' not found", hint="the local engine is off: no model is served here")
    target = state.router.resolve(name)
    return _card(state, name, target.adapter)


def _card(state, name: str, adapter: str | None) -> ModelCard:
    base = state.extras.get("base_card")
    if base is None:
        base = state.extras["base_card"] = base_card(state.engine)
    info = state.engine.adapters.get(adapter) if adapter else None
    started = datetime.fromtimestamp(state.started, timezone.utc)
    size, digest, desc, path = base.bytes, hashlib.sha256(base.fingerprint.encode()), "", None
    if info is not None:
        path, desc = Path(info.path), info.description
        st = _weights(path).stat()
        size += st.st_size
        digest.update(_file_digest(str(_weights(path)), st.st_mtime_ns, st.st_size).encode())
        started = max(started, datetime.fromtimestamp(st.st_mtime, timezone.utc))
    return ModelCard(name, base, adapter, path, size, digest.hexdigest(), started.isoformat(), desc)


def cards(state) -> list[ModelCard]:
    if state.router is None:
        return []
    return [card(state, n) for n in state.router.model_names()]
