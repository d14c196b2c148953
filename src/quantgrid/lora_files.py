"""LoRA adapter files: the one reader and writer of PEFT's ``adapter_config.json`` and
``adapter_model.safetensors``.

Merging, serving, GGUF export, hub validation and releases all open adapters through
this module, so they agree on one policy:

* names: factors are keyed by the base model's module name, as ``model.named_modules()``
  gives it (``model.layers.0.self_attn.q_proj``). PEFT's wrapper prefix
  (``base_model.model.``) and an adapter-name segment (``lora_A.default.weight``) are
  dropped on reading; PEFT's saved form (``base_model.model.<module>.lora_A.weight``) is
  written back, since PEFT silently leaves a LoRA at its initial value when the names in
  the file do not match its model;
* values: floating-point tensors, read as float32 (f16 and bf16 widen exactly); anything
  else is an error. Only safetensors is read: nothing is unpickled;
* shapes: every module has both factors, ``A`` [r, d_in] and ``B`` [d_out, r], and r is the
  rank the config gives that module;
* scaling: PEFT's ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), honouring
  ``rank_pattern`` / ``alpha_pattern``. DoRA is refused: its magnitude vectors are not a
  LoRA update;
* the config written is PEFT's own ``LoraConfig`` (so PEFT, vLLM and the Hugging Face Hub
  read every key they expect), and it names the base by its id, never by a path on this
  machine.

Importing this module needs neither torch nor peft: the hub's static checks and the thin
client use the file names. Reading or writing weights imports torch and safetensors.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantgrid.errors import ModelError

if TYPE_CHECKING:
    import torch

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# A LoRA factor as PEFT saves it, with or without the wrapper prefix and the adapter name.
KEY_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")
# PEFT's LoraConfig defaults for the two numbers a config may leave out.
DEFAULT_R, DEFAULT_ALPHA = 8, 8

# How an error is raised: called as ``error(message, hint=...)`` (ModelError, ExportError, or
# functools.partial(ValidationError, check=...)), so each caller keeps its own error type.
ErrorType = Callable[..., Exception]


# ------------------------------------------------------------------ the factors


@dataclass(frozen=True)
class LoraFactors:
    """One module's LoRA update: ``delta_W = scaling * B @ A``."""

    A: torch.Tensor  # [r, d_in]
    B: torch.Tensor  # [d_out, r]
    scaling: float = 1.0

    def __post_init__(self) -> None:
        if self.A.dim() != 2 or self.B.dim() != 2 or self.A.shape[0] != self.B.shape[1]:
            raise ModelError(f"LoRA factor shapes do not fit: A {tuple(self.A.shape)}, B {tuple(self.B.shape)}",
                             hint="A must be [r, d_in] and B [d_out, r] (PEFT's lora_A / lora_B weights)")

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.B.shape[0], self.A.shape[1]

    def delta(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense ``[d_out, d_in]`` update. Only for tests, dense methods and small modules."""
        import torch

        dtype = dtype or torch.float32
        return self.scaling * (self.B.to(dtype) @ self.A.to(dtype))


# ------------------------------------------------------------------ names


def module_name(name: str) -> str:
    """A module's name in the base model: PEFT's wrapper prefix dropped."""
    return name.removeprefix(PEFT_PREFIX)


def peft_key(module: str, side: str) -> str:
    """The tensor name PEFT saves (and loads) for factor ``side`` ('A' or 'B') of ``module``."""
    return f"{PEFT_PREFIX}{module_name(module)}.lora_{side}.weight"


def is_lora_dir(path: str | Path) -> bool:
    """True when ``path`` holds both PEFT adapter files."""
    p = Path(path)
    return (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


# ------------------------------------------------------------------ the base id


def base_id(name_or_path: str | None) -> str | None:
    """The id that names a base model in files other machines read, or None.

    A Hugging Face id is kept as given; a local directory gives the name a quantgrid base
    records (``quantgrid_base.json``) or, for a Hugging Face cache snapshot
    (``models--org--name/snapshots/<rev>``), ``org/name``. Any other local path gives None:
    it means nothing elsewhere and shows this machine's directory layout.
    """
    from quantgrid.ml.models import BASE_ID_FILE  # torch-free at import

    if not name_or_path or not str(name_or_path).strip():
        return None
    text = str(name_or_path)
    p = Path(text).expanduser()
    if p.is_dir():
        id_file = p / BASE_ID_FILE
        if id_file.is_file():
            try:
                name = json.loads(id_file.read_text(encoding="utf-8")).get("name")
            except (ValueError, UnicodeDecodeError, AttributeError):
                name = None
            if isinstance(name, str) and name.strip() and not _looks_like_path(name):
                return name
        parts = p.resolve().parts
        if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
            return parts[-3].removeprefix("models--").replace("--", "/")
        return None
    return None if _looks_like_path(text) else text


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in text
            or re.match(r"^[A-Za-z]:[\\/]", text) is not None or text.count("/") > 1)


# ------------------------------------------------------------------ reading


def read_config(source: str | Path | bytes, *, error: ErrorType = ModelError) -> dict[str, Any]:
    """``adapter_config.json`` of an adapter directory (or that file's bytes) as a dict."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where, hint = bytes(source), CONFIG, None
    else:
        path = Path(source) / CONFIG
        if not path.is_file():
            raise error(f"{source} is not an adapter directory (no {CONFIG})",
                        hint="pass the directory that `quantgrid train` or a release wrote")
        data, where, hint = path.read_bytes(), str(path), "re-save the adapter with PEFT, or retrain it"
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{where} is not valid JSON ({str(e)[:80]})", hint=hint) from None
    if not isinstance(value, dict):
        raise error(f"{where} must be a JSON object", hint=hint)
    return value


def _pattern_value(module: str, pattern: Mapping[str, Any] | None, default: Any) -> Any:
    # PEFT matches rank_pattern / alpha_pattern keys as a suffix regex of the module name.
    for key, value in (pattern or {}).items() if isinstance(pattern, Mapping) else ():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def module_rank(config: Mapping[str, Any], module: str) -> int:
    """The rank ``config`` gives ``module`` (``r``, or its ``rank_pattern`` entry)."""
    return int(_pattern_value(module, config.get("rank_pattern"), config.get("r", DEFAULT_R)))


def module_scaling(config: Mapping[str, Any], module: str) -> float:
    """PEFT's scaling of ``module``'s update: ``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA."""
    r = module_rank(config, module)
    alpha = float(_pattern_value(module, config.get("alpha_pattern"), config.get("lora_alpha", DEFAULT_ALPHA)))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def factors_from_state_dict(state: Mapping[str, Any], config: Mapping[str, Any], *,
                            error: ErrorType = ModelError, where: str = "a LoRA adapter") -> dict[str, LoraFactors]:
    """PEFT's saved tensors + its config -> ``{module: LoraFactors}``, by the policy above."""
    import torch

    if config.get("use_dora"):
        raise error(f"{where}: DoRA adapters are not supported (use_dora is set)",
                    hint="train with the standard quantgrid recipe (plain LoRA)")
    sides: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        m = KEY_RE.match(key)
        if m is None:
            raise error(f"unexpected tensor {key!r} in {where}",
                        hint="only lora_A / lora_B weights are read; drop modules_to_save, biases, DoRA")
        if not tensor.is_floating_point():
            raise error(f"tensor {key!r} in {where} has dtype {tensor.dtype}, not a floating-point type",
                        hint="save LoRA weights as float32, float16 or bfloat16")
        ab = sides.setdefault(m["module"], {})
        if m["side"] in ab:
            raise error(f"tensor {key!r} in {where} is a second lora_{m['side']} of module {m['module']!r}",
                        hint="save one adapter per file (PEFT's save_pretrained does)")
        ab[m["side"]] = tensor.to(torch.float32)
    out: dict[str, LoraFactors] = {}
    for module, ab in sorted(sides.items()):
        if set(ab) != {"A", "B"}:
            raise error(f"module {module!r} has lora_{''.join(ab)} but not both lora_A and lora_B ({where})")
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise error(f"module {module!r} in {where}: LoRA factor shapes do not fit: A {tuple(a.shape)}, "
                        f"B {tuple(b.shape)}", hint="A must be [r, d_in] and B [d_out, r]")
        r = module_rank(config, module)
        if a.shape[0] != r:
            raise error(f"module {module!r} in {where} has rank {a.shape[0]}, but its config gives r={r}",
                        hint="the weights and the config (or the recipe) belong to different adapters")
        out[module] = LoraFactors(a, b, module_scaling(config, module))
    return out


def read_weights(source: str | Path | bytes, config: Mapping[str, Any] | None = None, *,
                 error: ErrorType = ModelError) -> dict[str, LoraFactors]:
    """An adapter's LoRA factors by module name (see the module docstring for the policy).

    ``source`` is an adapter directory (its config is read unless ``config`` is given) or
    the bytes of a weights file (then ``config`` is required: the hub passes its recipe's
    ``r`` and ``lora_alpha``, never the submitter's).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load, load_file

    if isinstance(source, (bytes, bytearray, memoryview)):
        if config is None:
            raise TypeError("read_weights(bytes) needs the adapter's config")
        where = WEIGHTS
        try:
            state = load(bytes(source))
        except SafetensorError as e:
            raise error(f"{WEIGHTS} is not a valid safetensors file ({str(e)[:80]})") from None
    else:
        d = Path(source)
        if config is None:
            config = read_config(d, error=error)
        path = d / WEIGHTS
        if not path.is_file():
            raise error(f"{d} is not an adapter directory (no {WEIGHTS})",
                        hint="pass the directory that `quantgrid train` or a release wrote")
        where = str(path)
        try:
            state = load_file(str(path))
        except SafetensorError as e:
            raise error(f"{path} is not a valid safetensors file ({str(e)[:80]})",
                        hint="re-save the adapter with PEFT's save_pretrained") from None
    return factors_from_state_dict(state, config, error=error, where=where)


def uniform_scaling(config: Mapping[str, Any], *, where: str, error: ErrorType = ModelError) -> tuple[int, float]:
    """(r, scaling) of an adapter whose modules share one rank and alpha; an error when
    ``rank_pattern`` / ``alpha_pattern`` give modules their own."""
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise error(f"{where}: per-module rank/alpha patterns are not supported",
                    hint="use one r and lora_alpha for all modules, as the quantgrid recipe does")
    r = int(config.get("r", DEFAULT_R))
    return r, module_scaling({**config, "rank_pattern": None, "alpha_pattern": None}, "")


# ------------------------------------------------------------------ writing

# What PEFT's LoraConfig writes for a plain LoRA adapter, for when peft is not installed
# (a torch-free hub): the keys PEFT and vLLM read, with LoraConfig's defaults.
_FALLBACK = {
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None, "revision": None,
    "r": DEFAULT_R, "lora_alpha": DEFAULT_ALPHA, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
    "target_modules": None, "inference_mode": True, "init_lora_weights": True, "use_rslora": False,
    "use_dora": False, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
    "layers_to_transform": None, "layers_pattern": None,
}


def config_dict(config: Any) -> dict[str, Any]:
    """``config`` (a ``peft.LoraConfig`` or a mapping of its arguments) as the JSON object
    ``LoraConfig.save_pretrained`` writes, naming the base by :func:`base_id`.

    A mapping gets ``task_type="CAUSAL_LM"`` and ``inference_mode=True`` unless it says
    otherwise. Without peft installed, a mapping is written over PEFT's defaults.
    """
    lora = _lora_config(config)
    out = lora.to_dict() if lora is not None else {**_FALLBACK, **dict(config)}
    for key, value in list(out.items()):
        if isinstance(value, (set, frozenset, tuple)):
            out[key] = sorted(value)  # PEFT's save_pretrained writes sets as lists
    # Plain JSON values (PEFT's enums are str subclasses), so the returned dict equals the file.
    out = json.loads(json.dumps(out))
    out["base_model_name_or_path"] = base_id(out.get("base_model_name_or_path"))
    return out


def _lora_config(config: Any):
    """A peft.LoraConfig for ``config``, or None when peft is not installed (then it must be a mapping)."""
    if not isinstance(config, Mapping):
        return config  # already a LoraConfig
    try:
        from peft import LoraConfig
    except ImportError:
        return None
    args = {"task_type": "CAUSAL_LM", "inference_mode": True, **config}
    if isinstance(args.get("target_modules"), (list, tuple)):
        args["target_modules"] = sorted(args["target_modules"])
    return LoraConfig(**args)


def write_config(out_dir: str | Path, config: Any) -> dict[str, Any]:
    """Write ``adapter_config.json`` as ``LoraConfig.save_pretrained`` does (sorted keys,
    indent 2); return its content. Set-valued fields (``target_modules``) are written as
    sorted lists rather than PEFT's arbitrary set order, so the same release has the same bytes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    content = config_dict(config)
    (out / CONFIG).write_text(json.dumps(content, indent=2, sort_keys=True), encoding="utf-8")
    return content


def write_adapter(out_dir: str | Path, weights: Mapping[str, LoraFactors] | bytes, config: Any, *,
                  error: ErrorType = ModelError) -> Path:
    """Write a PEFT adapter directory: ``adapter_config.json`` and ``adapter_model.safetensors``.

    ``weights`` are ``{module: LoraFactors}`` (each factor's rank and scaling must be the
    ones ``config`` gives its module; saved as float32 under PEFT's names) or the bytes of
    a weights file that was already validated (the hub's stage 1 checks every name and
    shape), written unchanged. ``config`` is a ``peft.LoraConfig`` or a mapping of its
    arguments; a local base path in it is replaced by the base's id (:func:`base_id`).
    """
    out = Path(out_dir)
    content = write_config(out, config)
    if isinstance(weights, (bytes, bytearray, memoryview)):
        (out / WEIGHTS).write_bytes(bytes(weights))
        return out
    from safetensors.torch import save_file

    tensors = {}
    for module, f in sorted(weights.items()):
        name = module_name(module)
        r, s = module_rank(content, name), module_scaling(content, name)
        if f.rank != r:
            raise error(f"module {name!r} has rank {f.rank}, but the config gives r={r}")
        if abs(f.scaling - s) > 1e-9 * max(1.0, abs(s)):
            raise error(f"module {name!r} has scaling {f.scaling:g}, but the config's lora_alpha/r gives {s:g}",
                        hint="fold the scaling into the config (merged factors have scaling 1: lora_alpha = r)")
        tensors[peft_key(name, "A")] = f.A.float().contiguous()
        tensors[peft_key(name, "B")] = f.B.float().contiguous()
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    return out


__all__ = ["CONFIG", "KEY_RE", "PEFT_PREFIX", "WEIGHTS", "LoraFactors", "base_id", "config_dict",
           "factors_from_state_dict", "is_lora_dir", "module_name", "module_rank", "module_scaling", "peft_key",
           "read_config", "read_weights", "uniform_scaling", "write_adapter", "write_config"]
