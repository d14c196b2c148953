"""Builds every kind of hostile submission the hub must reject, as bytes.

``good_submission()`` is a small, valid, recipe-conforming adapter zip for a synthetic
base config; every ``KINDS`` entry derives one attack from it and states the stage-1
``check`` that must reject it. Torch-free: zips are built with ``zipfile`` or by hand
(for what ``zipfile`` refuses to write: overlapping entries, lying headers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quantgrid.adapter import CONFIG, MANIFEST, WEIGHTS, BaseShape, Manifest, expected_lora_shapes
from quantgrid.recipe import LoraSettings, Recipe

# A synthetic base: the shapes of the tiny test Llama, no model files needed.
BASE_CONFIG = dict(model_type="llama", vocab_size=1024, hidden_size=64, intermediate_size=128,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
RECIPE = Recipe(base_model="quantgrid-tiny-test", lora=LoraSettings(r=4, alpha=8))
BASE = BaseShape.from_config(BASE_CONFIG, "quantgrid-tiny-test")


def st_bytes(tensors: dict[str, np.ndarray], *, dtype: str = "F32", header_extra: dict | None = None) -> bytes:
    """A safetensors file written by hand (so tests can also write broken ones)."""
    header: dict = {}
    chunks, pos = [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype="<f4" if dtype == "F32" else "<f2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def good_tensors(seed: int = 0, scale: float = 0.05, *, recipe: Recipe = RECIPE,
                 base: BaseShape = BASE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32)
            for k, s in expected_lora_shapes(recipe, base).items()}


def good_config(*, recipe: Recipe = RECIPE, **overrides) -> dict:
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": recipe.lora.r, "lora_alpha": recipe.lora.alpha,
           "target_modules": list(recipe.lora.target_modules), "lora_dropout": 0.05, "bias": "none",
           "use_dora": False, "use_rslora": False, "modules_to_save": None, "fan_in_fan_out": False,
           "base_model_name_or_path": "quantgrid-tiny-test"}
    cfg.update(overrides)
    return cfg


def manifest_for(files: dict[str, bytes], *, fingerprint: str | None = None, recipe: Recipe = RECIPE,
                 base: BaseShape = BASE) -> bytes:
    m = Manifest(recipe_hash=recipe.hash(), recipe=recipe.model_dump(mode="json"),
                 base_model={"name": base.name, "fingerprint": fingerprint or base.fingerprint},
                 author="mallory", files={n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    return m.model_dump_json().encode()


def good_files(*, weights: bytes | None = None, config: dict | None = None, extra: dict[str, bytes] | None = None,
               fingerprint: str | None = None, recipe: Recipe = RECIPE, base: BaseShape = BASE) -> dict[str, bytes]:
    files = {CONFIG: json.dumps(config or good_config(recipe=recipe)).encode(),
             WEIGHTS: weights if weights is not None else st_bytes(good_tensors(recipe=recipe, base=base)),
             "README.md": b"# test adapter\n", **(extra or {})}
    files[MANIFEST] = manifest_for(files, fingerprint=fingerprint, recipe=recipe, base=base)
    return files


def submission_for(tensors: dict[str, np.ndarray], recipe: Recipe, base: BaseShape) -> bytes:
    """A well-formed submission zip for any recipe and base, holding ``tensors``."""
    return zip_bytes(good_files(weights=st_bytes(tensors), recipe=recipe, base=base))


def zip_bytes(files: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED,
              attrs: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, body in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = (attrs or {}).get(name, 0o100644 << 16)
            info.create_system = 3
            zf.writestr(info, body)
    return buf.getvalue()


def good_submission() -> bytes:
    return zip_bytes(good_files())


# ---------------------------------------------------------------- hand-built zips


@dataclass
class RawEntry:
    name: str
    data: bytes  # compressed bytes as stored
    usize: int
    crc: int
    method: int = zipfile.ZIP_DEFLATED
    flags: int = 0
    alias_of: str | None = None  # the central directory points at that entry's local header


def raw_zip(entries: list[RawEntry], locals_: list[RawEntry] | None = None, prefix: bytes = b"") -> bytes:
    """Write local headers for ``locals_`` (default: entries), then a central directory for
    ``entries`` whose offsets may point anywhere: this is how overlapping entries are made."""
    out = bytearray(prefix)
    offsets = {}
    for e in locals_ if locals_ is not None else entries:
        offsets.setdefault(e.name, len(out))
        n = e.name.encode()
        out += struct.pack("<4sHHHHHLLLHH", b"PK\x03\x04", 20, e.flags, e.method, 0, 0x21, e.crc,
                           len(e.data), e.usize, len(n), 0) + n + e.data
    cd_start = len(out)
    for e in entries:
        n = e.name.encode()
        off = offsets[e.alias_of or e.name]
        out += struct.pack("<4sHHHHHHLLLHHHHHLL", b"PK\x01\x02", 0x0314, 20, e.flags, e.method, 0, 0x21, e.crc,
                           len(e.data), e.usize, len(n), 0, 0, 0, 0, 0o100644 << 16, off) + n
    cd_size = len(out) - cd_start
    out += struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, len(entries), len(entries), cd_size, cd_start, 0)
    return bytes(out)


def deflate(body: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(body) + c.flush()


def _entries(files: dict[str, bytes]) -> list[RawEntry]:
    return [RawEntry(n, deflate(b), len(b), zlib.crc32(b)) for n, b in files.items()]


def overlap_bomb() -> bytes:
    """Fifield-style: many directory entries share one compressed block.

    The block is incompressible, so only the overlap (not the ratio) gives it away."""
    files = good_files()
    body = np.random.default_rng(0).bytes(200_000)
    block = RawEntry("eval/results.json", deflate(body), len(body), zlib.crc32(body))
    entries = _entries(files) + [block]
    aliases = [RawEntry(name, block.data, block.usize, block.crc, alias_of=block.name)
               for name in ("training/TRAINING_LOG.md", "training/train_config.yaml", "training/loss.png")]
    return raw_zip(entries + aliases, locals_=entries)


def claimed_huge_bomb() -> bytes:
    """A directory claiming a ~4 GB weights file (the most a non-zip64 header can say)."""
    ents = _entries(good_files())
    for e in ents:
        if e.name == WEIGHTS:
            e.usize = 0xFFFFFFFE
    return raw_zip(ents)


def real_deflate_bomb(size: int = 64 << 20) -> bytes:
    """A 64 MB run of zeros deflated to ~64 KB, named like an allowed eval file."""
    zeros = b"\0" * size
    files = good_files()
    ents = _entries(files) + [RawEntry("eval/results.json", deflate(zeros), size, zlib.crc32(zeros))]
    return raw_zip(ents)


def lying_size_bomb() -> bytes:
    """Declares a small size but the deflate stream expands far beyond it."""
    zeros = b"\0" * (32 << 20)
    files = good_files()
    ents = _entries(files) + [RawEntry("eval/results.json", deflate(zeros), 1000, zlib.crc32(zeros))]
    return raw_zip(ents)


def encrypted_entry() -> bytes:
    ents = _entries(good_files())
    ents[0].flags |= 1
    return raw_zip(ents)


def pickle_payload(canary: str) -> bytes:
    """A torch-style pickle whose unpickling would create ``canary``."""

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    return pickle.dumps(Boom(), protocol=2)


def polyglot_weights() -> bytes:
    """A valid safetensors file with a zip (holding a pickle) appended after the data."""
    return st_bytes(good_tensors()) + zip_bytes({"data.pkl": b"\x80\x02N."})


def hostile_header_length() -> bytes:
    return struct.pack("<Q", 1 << 62) + b"{}"


def bad_offsets() -> bytes:
    t = good_tensors()
    blob = bytearray(st_bytes(t))
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(bytes(blob[8:8 + n]))
    first = next(iter(header))
    header[first]["data_offsets"] = [0, 10 ** 12]
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + bytes(blob[8 + n:])


def overlapping_tensors() -> bytes:
    t = good_tensors()
    blob = bytearray(st_bytes(t))
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(bytes(blob[8:8 + n]))
    names = list(header)
    # second tensor aliases the first (same size): shapes fine, bytes shared
    header[names[2]]["data_offsets"] = header[names[0]]["data_offsets"]
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + bytes(blob[8 + n:])


def with_weights(weights: bytes) -> bytes:
    return zip_bytes(good_files(weights=weights))


def with_tensors(tensors: dict[str, np.ndarray], **kw) -> bytes:
    return with_weights(st_bytes(tensors, **kw))


def _nan() -> bytes:
    t = good_tensors()
    next(iter(t.values()))[0, 0] = np.nan
    return with_tensors(t)


def _wrong_shape() -> bytes:
    t = good_tensors()
    k = next(iter(t))
    t[k] = np.zeros((t[k].shape[0] * 2, t[k].shape[1]), np.float32)
    return with_tensors(t)


def _extra_key() -> bytes:
    t = good_tensors()
    t["base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"] = np.zeros((4, 64), np.float32)
    return with_tensors(t)


def _embedding() -> bytes:
    t = good_tensors()
    t["base_model.model.model.embed_tokens.weight"] = np.zeros((16, 64), np.float32)
    return with_tensors(t)


def _huge_values() -> bytes:
    t = good_tensors()
    next(iter(t.values()))[:] = 1e6
    return with_tensors(t)


def _bad_dtype() -> bytes:
    blob = bytearray(st_bytes(good_tensors()))
    return with_weights(bytes(blob).replace(b'"F32"', b'"I64"', 1))


# name -> (builder(canary_path) -> zip bytes, the check that must reject it)
KINDS: dict[str, tuple[Callable[[str], bytes], str]] = {
    "zip_slip_dotdot": (lambda c: zip_bytes({**good_files(), "training/../../evil.md": b"x"}), "archive.unsafe_path"),
    "zip_slip_absolute": (lambda c: zip_bytes({**good_files(), "/tmp/evil.md": b"x"}), "archive.unsafe_path"),
    "zip_slip_backslash": (lambda c: zip_bytes({**good_files(), "training\\..\\..\\evil.md": b"x"}),
                           "archive.unsafe_path"),
    "zip_slip_drive": (lambda c: zip_bytes({**good_files(), "C:/evil.md": b"x"}), "archive.unsafe_path"),
    "symlink": (lambda c: zip_bytes({**good_files(), "README.md": b"/etc/passwd"},
                                    attrs={"README.md": 0o120777 << 16}), "archive.symlink"),
    "duplicate_name": (lambda c: raw_zip(_entries(good_files()) + _entries({"README.md": b"second"})),
                       "archive.duplicate"),
    "duplicate_case": (lambda c: zip_bytes({**good_files(), "readme.md": b"x"}), "archive.duplicate"),
    "encrypted": (lambda c: encrypted_entry(), "archive.encrypted"),
    "nested_zip": (lambda c: zip_bytes(good_files(extra={"eval/results.json": good_submission()})), "archive.nested"),
    "nested_zip_by_name": (lambda c: zip_bytes({**good_files(), "eval/inner.zip": good_submission()}),
                           "archive.not_allowed"),
    "nested_gzip": (lambda c: zip_bytes(good_files(extra={"training/TRAINING_LOG.md": b"\x1f\x8b\x08\x00" + b"\0" * 20})),
                    "archive.nested"),
    "overlap_bomb": (lambda c: overlap_bomb(), "archive.overlap"),
    "claimed_4gb": (lambda c: claimed_huge_bomb(), "archive.bomb"),
    "deflate_bomb": (lambda c: real_deflate_bomb(), "archive.bomb"),
    "lying_size": (lambda c: lying_size_bomb(), "archive.corrupt"),
    "prepended_data": (lambda c: b"MZ" + b"\0" * 100 + good_submission(), "archive.layout"),
    "pickle_bin": (lambda c: zip_bytes({**good_files(), "adapter_model.bin": pickle_payload(c)}),
                   "archive.not_allowed"),
    "pickle_renamed": (lambda c: with_weights(pickle_payload(c)), "safetensors.header"),
    "polyglot_weights": (lambda c: with_weights(polyglot_weights()), "safetensors.offsets"),
    "hostile_header_length": (lambda c: with_weights(hostile_header_length()), "safetensors.header"),
    "bad_offsets": (lambda c: with_weights(bad_offsets()), "safetensors.offsets"),
    "overlapping_tensors": (lambda c: with_weights(overlapping_tensors()), "safetensors.offsets"),
    "bad_dtype": (lambda c: _bad_dtype(), "safetensors.dtype"),
    "nan_tensor": (lambda c: _nan(), "weights.nan"),
    "huge_values": (lambda c: _huge_values(), "weights.norm"),
    "wrong_shape": (lambda c: _wrong_shape(), "weights.shapes"),
    "extra_key": (lambda c: _extra_key(), "weights.keys"),
    "embedding_tensor": (lambda c: _embedding(), "weights.embedding"),
    "dora_config": (lambda c: zip_bytes(good_files(config=good_config(use_dora=True))), "config.dora"),
    "rslora_config": (lambda c: zip_bytes(good_files(config=good_config(use_rslora=True))), "config.rslora"),
    "lora_bias": (lambda c: zip_bytes(good_files(config=good_config(lora_bias=True))), "config.bias"),
    "modules_to_save": (lambda c: zip_bytes(good_files(config=good_config(modules_to_save=["lm_head"]))),
                        "config.modules_to_save"),
    "wrong_rank": (lambda c: zip_bytes(good_files(config=good_config(r=8))), "config.rank"),
    "wrong_alpha": (lambda c: zip_bytes(good_files(config=good_config(lora_alpha=64))), "config.alpha"),
    "foreign_base": (lambda c: zip_bytes(good_files(fingerprint="0123456789abcdef")), "manifest.base"),
    "tampered_hash": (lambda c: zip_bytes({**good_files(), CONFIG: json.dumps(good_config(lora_dropout=0.1)).encode()}),
                      "manifest.hash"),
    "not_a_zip": (lambda c: b"hello, hub", "archive.corrupt"),
    "stored_unsupported_method": (lambda c: zip_bytes(good_files(), method=zipfile.ZIP_BZIP2), "archive.compression"),
}
