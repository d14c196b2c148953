"""The adapter directory and its manifest (``quantgrid.json``).

An adapter directory is a plain PEFT adapter (``adapter_config.json`` +
``adapter_model.safetensors``, read and written by :mod:`quantgrid.lora_files`) plus
quantgrid's manifest and the training/eval records (docs/architecture.md, "The formats
between the journeys"). This module imports without torch: the hub and thin clients use it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from quantgrid import __version__
from quantgrid.lora_files import CONFIG, WEIGHTS, peft_key
from quantgrid.recipe import Recipe
from quantgrid.utils import atomic_write_text, sha256_file

MANIFEST = "quantgrid.json"
REQUIRED_FILES = (CONFIG, WEIGHTS, MANIFEST)
# Files that hold raw training data: never packaged, never hashed into the manifest.
RAW_DATA_FILES = ("training/dataset.jsonl",)


class BaseRef(BaseModel):
    name: str
    revision: str = "main"
    fingerprint: str


class DatasetInfo(BaseModel):
    """What the manifest says about the training data: counts and a hash, never text."""

    description: str | None = None
    fingerprint: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    format_version: int = 1
    quantgrid_version: str = __version__
    created_at: float = Field(default_factory=time.time)
    recipe_hash: str
    recipe: dict[str, Any]
    base_model: BaseRef
    non_standard: list[str] = Field(default_factory=list)
    author: str | None = None
    name: str | None = Field(None, description="the adapter's registry name (lowercase letters, digits, '-')")
    improves: str | None = Field(None, description="registry name of the adapter this one is a new version of")
    dataset: DatasetInfo = Field(default_factory=DatasetInfo)
    eval: dict[str, Any] | None = None
    routing: dict[str, Any] | None = Field(None, description="question-word profile for serving's auto routing")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")

    @property
    def standard(self) -> bool:
        return not self.non_standard


def hashed_files(adapter_dir: Path) -> dict[str, str]:
    """sha256 of every file in the directory except the manifest itself and raw data."""
    out = {}
    for p in sorted(adapter_dir.rglob("*")):
        rel = p.relative_to(adapter_dir).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in RAW_DATA_FILES and not p.name.startswith("."):
            out[rel] = sha256_file(p)
    return out


def write_manifest(adapter_dir: str | Path, *, recipe: Recipe, base_name: str, base_fingerprint: str,
                   standard: Recipe | None = None, author: str | None = None,
                   dataset_description: str | None = None, dataset_fingerprint: dict | None = None,
                   eval_summary: dict | None = None, previous: Manifest | None = None,
                   routing: dict | None = None) -> Manifest:
    """Write ``quantgrid.json`` with fresh file hashes. Call it last, after every other file."""
    adapter_dir = Path(adapter_dir)
    m = Manifest(
        recipe_hash=recipe.hash(),
        recipe=recipe.model_dump(mode="json"),
        base_model=BaseRef(name=base_name, revision=recipe.base_revision, fingerprint=base_fingerprint),
        non_standard=(recipe.standard_fields_differ(standard) if standard
                      else list(previous.non_standard) if previous else []),
        author=author if author is not None else (previous.author if previous else None),
        dataset=DatasetInfo(
            description=dataset_description or (previous.dataset.description if previous else None),
            fingerprint=dataset_fingerprint or (previous.dataset.fingerprint if previous else {}),
        ),
        eval=eval_summary if eval_summary is not None else (previous.eval if previous else None),
        routing=routing if routing is not None else (previous.routing if previous else None),
        files=hashed_files(adapter_dir),
    )
    atomic_write_text(adapter_dir / MANIFEST, m.model_dump_json(indent=2))
    return m


def read_manifest(adapter_dir: str | Path) -> Manifest:
    from quantgrid.errors import ModelError

    p = Path(adapter_dir) / MANIFEST
    if not p.is_file():
        raise ModelError(f"{adapter_dir} has no {MANIFEST}", hint="was it written by `quantgrid train`?")
    return Manifest.model_validate(json.loads(p.read_text(encoding="utf-8")))


def is_adapter_dir(path: str | Path) -> bool:
    """A quantgrid adapter directory: PEFT's config and quantgrid's manifest."""
    p = Path(path)
    return (p / CONFIG).is_file() and (p / MANIFEST).is_file()


# ---------------------------------------------------------------- the submission file set

TRAINING_LOG = "training/TRAINING_LOG.md"
TRAIN_CONFIG = "training/train_config.yaml"
LOSS_PLOT = "training/loss.png"
RESULTS = "eval/results.json"
# Exactly what a submission holds: weights, config, manifest, the training log and plot,
# the training settings (local paths replaced) and the aggregate eval numbers. Nothing here
# can hold the contributor's data: datasets, benchmark items, answers and reports stay home.
SUBMISSION_FILES = frozenset({CONFIG, WEIGHTS, MANIFEST, TRAINING_LOG, TRAIN_CONFIG, LOSS_PLOT, RESULTS})
# Also accepted from older clients: a README.md model card (the contributor's public text).
HUB_ACCEPTS = SUBMISSION_FILES | {"README.md"}
ALLOWED_DIRS = {"training": (".yaml", ".md", ".png"), "eval": (".json", ".jsonl")}


def is_submission_file(rel: str) -> bool:
    """True for a relative posix path a new submission may contain (the hub's stage-1 allowlist)."""
    return rel in HUB_ACCEPTS


def is_allowed_file(rel: str) -> bool:
    """True for a path an already-stored submission may hold (read back by validation and releases).

    Broader than :func:`is_submission_file`: zips accepted before the allowlist was narrowed
    may still carry eval/*.jsonl; they are read for their weights only.
    """
    if rel in HUB_ACCEPTS:
        return True
    parts = rel.split("/")
    return (len(parts) == 2 and parts[0] in ALLOWED_DIRS and parts[1] not in ("", ".", "..")
            and not parts[1].startswith(".") and parts[1].endswith(ALLOWED_DIRS[parts[0]]))


def left_out_reason(rel: str) -> str:
    """Why ``package`` leaves a file of the adapter directory out of the submission."""
    name = rel.rsplit("/", 1)[-1].lower()
    if rel in RAW_DATA_FILES or (rel.startswith("training/") and name.endswith((".jsonl", ".json", ".csv"))):
        return "your training data: it never leaves this machine"
    if name == "benchmark.jsonl" or (rel.startswith("eval/") and name.endswith((".jsonl", ".csv"))):
        return "your benchmark items: held-out data stays on this machine"
    if rel.startswith("eval/") and name.endswith(".md"):
        return "the report quotes benchmark items and generated answers"
    if rel.startswith("eval/") and name.endswith(".json"):
        return "a separate eval run's full results (the adapter's numbers go in as eval/results.json)"
    if rel == "README.md":
        return "the model card is free text; the hub shows the manifest's one-line dataset description instead"
    if rel in ("chat_template.jinja", "special_tokens_map.json") or name.startswith("tokenizer"):
        return "tokenizer files: the hub serves its own base's tokenizer with the recipe's chat template"
    if name == "proposal.md":
        return "your adapter proposal: share it yourself if you wish"
    if rel.startswith("checkpoints/") or "/checkpoint" in rel:
        return "training checkpoints (optimizer state, not part of an adapter)"
    if name.startswith("."):
        return "a hidden file"
    return "not one of the files a submission holds"


def submission_files(adapter_dir: str | Path) -> tuple[list[str], list[str]]:
    """(files to package, files left out) of an adapter directory, as sorted relative paths.

    Kept: :data:`SUBMISSION_FILES` that are plain files. Left out: everything else,
    including symlinks (see :func:`left_out_reason`).
    """
    adapter_dir = Path(adapter_dir)
    keep, leave = [], []
    for p in sorted(adapter_dir.rglob("*")):
        rel = p.relative_to(adapter_dir).as_posix()
        if p.is_dir() and not p.is_symlink():
            continue
        if p.is_file() and not p.is_symlink() and rel in SUBMISSION_FILES:
            keep.append(rel)
        else:
            leave.append(rel)
    return keep, leave


def write_zip(out_path: str | Path, contents: dict[str, bytes]) -> Path:
    """Write ``contents`` as a zip atomically: deflated, sorted, with a fixed timestamp.

    So the same contents give the same bytes (and so the same sha256) every time.
    """
    import zipfile

    from quantgrid.utils import atomic_path

    with atomic_path(out_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(contents):
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            zf.writestr(info, contents[rel])
    return Path(out_path)


def build_submission_zip(adapter_dir: str | Path, out_path: str | Path, manifest: Manifest,
                         contents: dict[str, bytes] | None = None) -> Path:
    """Write the zip: the manifest's files (from ``contents``, else the directory) plus ``manifest``."""
    adapter_dir = Path(adapter_dir)
    contents = contents or {}
    body = {rel: contents[rel] if rel in contents else (adapter_dir / rel).read_bytes() for rel in manifest.files}
    body[MANIFEST] = manifest.model_dump_json(indent=2).encode()
    return write_zip(out_path, body)


# ---------------------------------------------------------------- stage 1: static checks

# Where PEFT puts each LoRA target in a Llama-family model, and the (in, out) sizes of it.
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_FINGERPRINT_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "vocab_size")


class BaseShape(BaseModel):
    """The sizes of the hub's base model that fix every LoRA tensor's shape (from config.json)."""

    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    fingerprint: str

    @classmethod
    def from_config(cls, cfg: dict[str, Any], name: str) -> BaseShape:
        import hashlib

        heads = int(cfg["num_attention_heads"])
        payload = {k: cfg.get(k) for k in _FINGERPRINT_KEYS}
        # transformers fills a missing num_key_value_heads with the head count (no GQA); so do we.
        payload["num_key_value_heads"] = cfg.get("num_key_value_heads") or heads
        return cls(
            name=name, model_type=cfg["model_type"], num_layers=cfg["num_hidden_layers"],
            hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"], num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, vocab_size=cfg["vocab_size"],
            # Same fingerprint as quantgrid.ml.models.base_info, without loading transformers.
            fingerprint=hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16],
        )

    @classmethod
    def from_dir(cls, base_dir: str | Path) -> BaseShape:
        """Read a local base model directory's config.json (and quantgrid_base.json name)."""
        from quantgrid.errors import ModelError

        d = Path(base_dir)
        if not (d / "config.json").is_file():
            raise ModelError(f"{base_dir} has no config.json", hint="the hub's base must be a local model directory")
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        name = str(base_dir)
        if (d / "quantgrid_base.json").is_file():
            name = json.loads((d / "quantgrid_base.json").read_text(encoding="utf-8"))["name"]
        return cls.from_config(cfg, name)

    def module_dims(self, module: str) -> tuple[int, int]:
        """(in_features, out_features) of one projection in every layer."""
        h, q, kv, i = (self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                       self.intermediate_size)
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}[module]


def expected_lora_shapes(recipe: Recipe, base: BaseShape) -> dict[str, tuple[int, ...]]:
    """Exactly the tensors (PEFT's saved names) and shapes a recipe-conforming adapter has."""
    from quantgrid.errors import ConfigError

    r = recipe.lora.r
    out: dict[str, tuple[int, ...]] = {}
    for module in recipe.lora.target_modules:
        if module not in _PARENT:
            raise ConfigError(f"the hub recipe targets {module!r}, which quantgrid cannot check",
                              hint=f"target modules must be among {', '.join(_PARENT)}")
        d_in, d_out = base.module_dims(module)
        for layer in range(base.num_layers):
            name = f"model.layers.{layer}.{_PARENT[module]}.{module}"
            out[peft_key(name, "A")] = (r, d_in)
            out[peft_key(name, "B")] = (d_out, r)
    return out


class StaticLimits(BaseModel):
    """The hub's knobs for stage 1 (all have safe defaults)."""

    max_abs: float = 1e3
    outlier_factor: float = 100.0
    caps: dict[str, int | float] = Field(default_factory=dict, description="overrides of archive.Caps fields")


class CheckedSubmission(BaseModel):
    """A submission that passed stage 1: its files in memory and what was learned about them."""

    model_config = {"arbitrary_types_allowed": True}

    files: dict[str, bytes]
    manifest: Manifest
    config: dict[str, Any]
    notes: list[str] = Field(default_factory=list, description="things noticed and deliberately ignored")
    tensor_norms: dict[str, float] = Field(default_factory=dict)

    @property
    def weights(self) -> bytes:
        return self.files[WEIGHTS]


def _fail(check: str, message: str, hint: str | None = None):
    from quantgrid.errors import ValidationError

    return ValidationError(message, hint=hint, check=check)


def _json_entry(files: dict[str, bytes], name: str, check: str) -> dict[str, Any]:
    try:
        value = json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _fail(check, f"{name} is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(value, dict):
        raise _fail(check, f"{name} must be a JSON object")
    return value


# Flags that change the update's form or scale, so it can no longer be merged exactly
# with other recipe adapters or served as a plain LoRA.
_REJECTED_FLAGS = {
    "use_dora": ("config.dora", "DoRA adapters cannot be merged with plain LoRA adapters"),
    "use_rslora": ("config.rslora", "rsLoRA changes the scaling to alpha/sqrt(r), unlike the recipe"),
    "lora_bias": ("config.bias", "LoRA bias terms are not part of the recipe"),
    "modules_to_save": ("config.modules_to_save", "modules_to_save ships full copies of base layers"),
    "trainable_token_indices": ("config.embedding", "trainable token embeddings are not part of the recipe"),
    "rank_pattern": ("config.patterns", "per-module ranks break the exact merge"),
    "alpha_pattern": ("config.patterns", "per-module alphas break the exact merge"),
    "layers_to_transform": ("config.patterns", "the recipe adapts every layer"),
    "target_parameters": ("config.target_modules", "parameter targets are not part of the recipe"),
    "fan_in_fan_out": ("config.layout", "fan_in_fan_out is for GPT-2-style Conv1D layers, not this base"),
}


def check_adapter_config(cfg: dict[str, Any], recipe: Recipe, base: BaseShape) -> list[str]:
    """Reject settings that break merging or serving; return notes on ignored loader hints."""
    hint = "train with the hub's recipe: `quantgrid train --hub URL`"
    if cfg.get("peft_type") != "LORA":
        raise _fail("config.peft_type", f"adapter_config.json has peft_type {cfg.get('peft_type')!r}, not 'LORA'", hint)
    for key, (check, why) in _REJECTED_FLAGS.items():
        if cfg.get(key):
            raise _fail(check, f"adapter_config.json sets {key}={str(cfg[key])[:60]}: {why}", hint)
    if cfg.get("bias", "none") != "none":
        raise _fail("config.bias", f"adapter_config.json sets bias={cfg.get('bias')!r}; the recipe uses 'none'", hint)
    r = cfg.get("r")
    if not (isinstance(r, int) and not isinstance(r, bool)) or r != recipe.lora.r:
        raise _fail("config.rank", f"adapter rank r={r!r} differs from the recipe's r={recipe.lora.r}", hint)
    alpha = cfg.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or abs(float(alpha) - recipe.lora.alpha) > 1e-9:
        raise _fail("config.alpha", f"adapter lora_alpha={alpha!r} differs from the recipe's {recipe.lora.alpha:g}", hint)
    targets = cfg.get("target_modules")
    if not isinstance(targets, list) or sorted(map(str, targets)) != sorted(recipe.lora.target_modules):
        raise _fail("config.target_modules", f"adapter target_modules={str(targets)[:80]} differ from the recipe's "
                                             f"{recipe.lora.target_modules}", hint)
    notes = []
    if cfg.get("auto_mapping"):
        notes.append("adapter_config.json auto_mapping ignored: the hub chooses the model classes")
    named = cfg.get("base_model_name_or_path")
    if named and named != base.name and named != recipe.base_model:
        notes.append(f"adapter_config.json base_model_name_or_path={str(named)[:80]!r} ignored: "
                     f"the hub evaluates on its own base {base.name!r}")
    return notes


def check_weights(data: bytes, recipe: Recipe, base: BaseShape, limits: StaticLimits) -> dict[str, float]:
    """Header bounds, dtypes, the exact key set and shapes, then NaN/Inf and norm outliers."""
    from quantgrid.safetensors_check import check_values, parse_header

    tensors, _meta = parse_header(data)
    expected = expected_lora_shapes(recipe, base)
    extra = sorted(set(tensors) - set(expected))
    embedding = [k for k in extra if "embed_tokens" in k or "lm_head" in k]
    if embedding:
        raise _fail("weights.embedding", f"the weights hold embedding/lm_head tensors ({embedding[0]!r}); "
                                         "adapters may only touch the recipe's target modules")
    if extra:
        raise _fail("weights.keys", f"the weights hold {len(extra)} tensors the recipe does not produce, "
                                    f"e.g. {extra[0]!r}", "train with the hub's recipe and base")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise _fail("weights.keys", f"the weights lack {len(missing)} tensors the recipe produces, e.g. "
                                    f"{missing[0]!r}", "train with the hub's recipe and base")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise _fail("weights.shapes", f"tensor {name!r} has shape {list(tensors[name].shape)}, but the hub's "
                                          f"base and recipe give {list(shape)}",
                        "the adapter was trained for another base model or rank")
    stats = check_values(data, tensors, max_abs=limits.max_abs, outlier_factor=limits.outlier_factor)
    return {s.name: s.norm for s in stats}


def check_manifest(files: dict[str, bytes], base: BaseShape | None) -> Manifest:
    """The manifest parses, names the hub's base (unless ``base`` is None: the contributor's
    own re-check), and hashes exactly the other files."""
    import hashlib

    from pydantic import ValidationError as PydanticError

    try:
        manifest = Manifest.model_validate(_json_entry(files, MANIFEST, "manifest.invalid"))
    except PydanticError as e:
        raise _fail("manifest.invalid", f"quantgrid.json is not a valid manifest: {str(e).splitlines()[0][:120]}",
                    "re-create it with `quantgrid package`") from None
    if base is not None and manifest.base_model.fingerprint != base.fingerprint:
        raise _fail("manifest.base", f"the adapter was trained for base {manifest.base_model.name!r} "
                                     f"(fingerprint {manifest.base_model.fingerprint}), not the hub's base "
                                     f"{base.name!r} ({base.fingerprint})",
                    "train on the hub's base: `quantgrid train --hub URL`")
    listed, present = set(manifest.files), set(files) - {MANIFEST}
    if listed != present:
        diff = sorted(listed ^ present)
        raise _fail("manifest.hash", f"quantgrid.json lists different files than the archive holds ({diff[0]!r})",
                    "re-create the package with `quantgrid package`")
    for name in sorted(present):
        if hashlib.sha256(files[name]).hexdigest() != manifest.files[name]:
            raise _fail("manifest.hash", f"{name} does not match its sha256 in quantgrid.json",
                        "the file changed after packaging; re-run `quantgrid package`")
    return manifest


def check_private(files: dict[str, bytes]) -> None:
    """Reject entries that still hold the contributor's private content (paths, free text).

    The allowlist keeps datasets and reports out; this catches a settings file, log or
    results file written by an old or modified client with local paths or quoted items in it.
    """
    from quantgrid.eval.results import EvalSummary
    from quantgrid.privacy import looks_like_path, private_content

    hint = "package it with a current `quantgrid package`, which writes public copies of these files"
    for name in sorted(files):
        if name in (TRAIN_CONFIG, TRAINING_LOG, RESULTS, "README.md"):
            why = private_content(name, files[name])
            if why:
                raise _fail("archive.private", f"{name} {why}", hint)
    try:
        manifest = json.loads(files[MANIFEST].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return  # check_manifest reports it
    summary = EvalSummary.from_manifest(manifest.get("eval") if isinstance(manifest, dict) else None)
    if summary is not None and summary.benchmark and looks_like_path(summary.benchmark):
        raise _fail("manifest.private", f"quantgrid.json names the local benchmark file {summary.benchmark[:60]!r}",
                    hint)


def check_submission(data: bytes, recipe: Recipe, base: BaseShape,
                     limits: StaticLimits | None = None) -> CheckedSubmission:
    """Stage 1, the entry point for untrusted bytes: a CheckedSubmission or a ValidationError.

    Torch-free, in memory, and total: every input either passes or raises
    ``ValidationError`` whose ``check`` names the rule (``archive.*``, ``safetensors.*``,
    ``weights.*``, ``config.*``, ``manifest.*``).
    """
    import functools

    from quantgrid.archive import Caps, read_zip
    from quantgrid.errors import ValidationError
    from quantgrid.lora_files import read_config

    limits = limits or StaticLimits()
    caps = Caps(**limits.caps)
    files = read_zip(data, allowed=is_submission_file, caps=caps, allowed_dirs=frozenset(ALLOWED_DIRS))
    for name in REQUIRED_FILES:
        if name not in files:
            raise _fail("archive.missing", f"the archive has no {name}", "build it with `quantgrid package`")
    for name, body in files.items():
        if name.endswith(".png") and not body.startswith(b"\x89PNG\r\n\x1a\n"):
            raise _fail("archive.content", f"{name} is not a PNG image")
    check_private(files)
    manifest = check_manifest(files, base)
    config = read_config(files[CONFIG], error=functools.partial(ValidationError, check="config.invalid"))
    notes = check_adapter_config(config, recipe, base)
    norms = check_weights(files[WEIGHTS], recipe, base, limits)
    return CheckedSubmission(files=files, manifest=manifest, config=config, notes=notes, tensor_norms=norms)
