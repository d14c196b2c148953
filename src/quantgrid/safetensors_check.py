"""Parsing a safetensors file by hand, from bytes, trusting nothing in it.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian header
length N, N bytes of UTF-8 JSON ``{name: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {str: str}}``, then the data buffer. Offsets are relative to the
buffer. We check every claim before touching data:

* N is small and inside the file; the header is a JSON object with no duplicate keys;
* each dtype is on an allowlist, each shape a short list of non-negative ints;
* ``prod(shape) * itemsize == end - begin``, offsets inside the buffer, and the
  tensors tile the buffer exactly — no overlap, no holes, no trailing bytes. A file
  that is also a zip or a pickle (a polyglot) has to hide its payload somewhere,
  and there is nowhere left.

Tensors are then viewed (not copied) with numpy for the NaN/Inf and norm checks.
Nothing here unpickles, imports torch, or executes anything from the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from quantgrid.errors import ValidationError

# dtype name -> (itemsize, numpy dtype used to view the raw bytes)
DTYPES: dict[str, tuple[int, str]] = {"F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2")}
MAX_HEADER_BYTES = 4 << 20
MAX_TENSORS = 8192
MAX_NDIM = 4


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute offsets into the file
    end: int


def _reject(check: str, message: str, hint: str | None = None) -> ValidationError:
    return ValidationError(message, hint=hint, check=check)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _reject("safetensors.header", f"the safetensors header repeats the key {k!r}")
        out[k] = v
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header(data: bytes, *, dtypes: dict[str, tuple[int, str]] = DTYPES,
                 max_header: int = MAX_HEADER_BYTES) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """(tensors by name, __metadata__) of a safetensors file, every offset validated."""
    hint = "save the adapter with safetensors (PEFT's save_pretrained does by default)"
    if len(data) < 8:
        raise _reject("safetensors.header", "the weights file is shorter than a safetensors header", hint)
    (n,) = struct.unpack_from("<Q", data, 0)
    if n < 2 or n > max_header or 8 + n > len(data):
        raise _reject("safetensors.header",
                      f"the weights file's header length ({n}) is impossible for a {len(data)}-byte file "
                      "(is it a pickle or another format renamed to .safetensors?)", hint)
    raw = data[8:8 + n]
    if raw[:1] != b"{":
        raise _reject("safetensors.header", "the safetensors header is not a JSON object", hint)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValidationError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _reject("safetensors.header", f"the safetensors header is not valid JSON ({str(e)[:80]})", hint) from None
    if not isinstance(header, dict):
        raise _reject("safetensors.header", "the safetensors header is not a JSON object", hint)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _reject("safetensors.header", "__metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise _reject("safetensors.header", f"the weights file has {len(header)} tensors; the limit is {MAX_TENSORS}")
    base, size = 8 + n, len(data) - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, spec in header.items():
        tensors[name] = _tensor_info(name, spec, base, size, dtypes)
    _check_tiling(tensors, base, len(data))
    return tensors, meta


def _tensor_info(name: str, spec: object, base: int, size: int, dtypes: dict[str, tuple[int, str]]) -> TensorInfo:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise _reject("safetensors.header", f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in dtypes:
        raise _reject("safetensors.dtype", f"tensor {name!r} has dtype {dtype!r}; allowed: {', '.join(dtypes)}",
                      hint="save LoRA weights as float32, float16 or bfloat16")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(_is_int(d) and 0 <= d < 1 << 40 for d in shape)):
        raise _reject("safetensors.header", f"tensor {name!r} has an invalid shape {str(shape)[:60]}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= size):
        raise _reject("safetensors.offsets", f"tensor {name!r} has offsets {str(offsets)[:60]} outside the "
                                             f"{size}-byte data buffer")
    nbytes = math.prod(shape) * dtypes[dtype][0]
    if nbytes != offsets[1] - offsets[0]:
        raise _reject("safetensors.offsets", f"tensor {name!r}: shape {shape} x {dtype} is {nbytes} bytes, "
                                             f"but its offsets span {offsets[1] - offsets[0]}")
    return TensorInfo(name, dtype, tuple(shape), base + offsets[0], base + offsets[1])


def _check_tiling(tensors: dict[str, TensorInfo], base: int, total: int) -> None:
    pos = base
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin < pos:
            raise _reject("safetensors.offsets", f"tensor {t.name!r} overlaps another tensor")
        if t.begin > pos:
            raise _reject("safetensors.offsets", f"the data buffer has {t.begin - pos} unindexed bytes "
                                                 f"before tensor {t.name!r}")
        pos = t.end
    if pos != total:
        raise _reject("safetensors.offsets", f"the weights file has {total - pos} bytes after its last tensor "
                                             "(a polyglot file?)")


def tensor_view(data: bytes, t: TensorInfo, dtypes: dict[str, tuple[int, str]] = DTYPES) -> np.ndarray:
    """The tensor as a float32 numpy array (a zero-copy view for F32)."""
    itemsize, np_dtype = dtypes[t.dtype]
    arr = np.frombuffer(data, dtype=np_dtype, count=(t.end - t.begin) // itemsize, offset=t.begin)
    if t.dtype == "BF16":
        # bfloat16 is the top half of a float32: shift the 16 bits into place.
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32, copy=False).reshape(t.shape)


@dataclass(frozen=True)
class TensorStats:
    name: str
    norm: float
    max_abs: float
    finite: bool


def tensor_stats(data: bytes, t: TensorInfo) -> TensorStats:
    a = tensor_view(data, t)
    finite = bool(np.isfinite(a).all())
    if not finite or a.size == 0:
        return TensorStats(t.name, math.nan if not finite else 0.0, math.nan if not finite else 0.0, finite)
    a64 = a.astype(np.float64, copy=False)
    return TensorStats(t.name, float(np.sqrt(np.dot(a64.ravel(), a64.ravel()))), float(np.abs(a64).max()), True)


def check_values(data: bytes, tensors: dict[str, TensorInfo], *, max_abs: float = 1e3,
                 outlier_factor: float = 100.0, norm_floor: float = 1e-2) -> list[TensorStats]:
    """Reject NaN/Inf, absurd magnitudes, and tensors whose norm is an outlier among their kind.

    "Kind" is the name with layer numbers removed (``...q_proj.lora_B.weight``): a
    poisoned update usually blows up a few tensors, which then stand out from the
    median of the same module in other layers. ``norm_floor`` keeps an untrained
    (all-zero) lora_B from making every tiny norm an "outlier".
    """
    import re

    stats = [tensor_stats(data, t) for t in tensors.values()]
    for s in stats:
        if not s.finite:
            raise _reject("weights.nan", f"tensor {s.name!r} contains NaN or Inf values",
                          hint="training diverged; lower the learning rate and retrain")
        if s.max_abs > max_abs:
            raise _reject("weights.norm", f"tensor {s.name!r} has a value of magnitude {s.max_abs:.3g} "
                                          f"(limit {max_abs:g})")
    groups: dict[str, list[TensorStats]] = {}
    for s in stats:
        groups.setdefault(re.sub(r"\.\d+\.", ".N.", s.name), []).append(s)
    for members in groups.values():
        if len(members) < 3:
            continue
        median = float(np.median([m.norm for m in members]))
        limit = outlier_factor * max(median, norm_floor)
        for m in members:
            if m.norm > limit:
                raise _reject("weights.norm", f"tensor {m.name!r} has norm {m.norm:.3g}, over {outlier_factor:g}x "
                                              f"the median {median:.3g} of its module in other layers")
    return stats
