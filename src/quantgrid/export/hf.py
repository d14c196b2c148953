"""``quantgrid export hf``: an adapter as a folder ready for ``huggingface-cli upload``.

The folder holds what a Hub user needs to load the adapter with PEFT: ``adapter_config.json``,
``adapter_model.safetensors``, the tokenizer with the recipe's chat template when the
adapter has one, and the model card (``README.md``, named after the repo). The training
and eval records go in under the same privacy rules as a hub submission (local paths
removed, results reduced to aggregate numbers; datasets, benchmarks and reports never),
so nothing of the contributor's data reaches the Hub.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from quantgrid.errors import ConfigError, ExportError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "tokenizer.model")


class HFExport(BaseModel):
    """Settings of ``quantgrid export hf`` (its fields are its flags)."""

    model_config = ConfigDict(extra="forbid")

    adapter: Path = Field(..., description="adapter directory to export")
    repo_id: str = Field(..., description="Hugging Face repo id, e.g. your-name/quantgrid-sec-filings")
    out: Path = Field(..., description="output folder (then: huggingface-cli upload REPO_ID OUT)")
    license: str | None = Field(None, description="licence id for the card (default: the adapter card's, else other)")
    overwrite: bool = Field(False, description="replace an existing output folder")


def export_hf(s: HFExport) -> tuple[Path, list[str], dict[str, str]]:
    """Write the folder; returns (path, files written, files left out -> why)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from quantgrid.adapter import CONFIG, MANIFEST, WEIGHTS, submission_files
    from quantgrid.card import write_adapter_card
    from quantgrid.hub.submit import public_contents
    from quantgrid.utils import atomic_dir

    try:
        validate_repo_id(s.repo_id)
    except HFValidationError as e:
        raise ConfigError(f"--repo-id {s.repo_id!r} is not a valid Hugging Face repo id: {e}",
                          hint="use NAME or OWNER/NAME with letters, digits, '-', '_' and '.'") from None
    src = Path(s.adapter)
    missing = [f for f in (CONFIG, WEIGHTS, MANIFEST) if not (src / f).is_file()]
    if missing:
        raise ExportError(f"{src} is not a quantgrid adapter directory (no {', '.join(missing)})",
                          hint="pass the directory `quantgrid train` wrote")
    if s.out.exists() and not s.overwrite:
        raise ConfigError(f"{s.out} already exists", hint="choose a new --out, or pass --overwrite to replace it")
    keep, left = submission_files(src)
    contents, _reduced, dropped = public_contents(src, [f for f in keep if f not in (MANIFEST, "README.md")])
    left_out = {**dropped, **{f: "not part of a published adapter" for f in left if not f.startswith(".")}}
    with atomic_dir(s.out, overwrite=s.overwrite) as tmp:
        for rel, body in contents.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(body)
        for name in TOKENIZER_FILES:  # the base's tokenizer and the recipe's template: no user data
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
                left_out.pop(name, None)
        # The card is built from the manifest (description, counts, recipe) with the repo's name.
        shutil.copyfile(src / MANIFEST, tmp / MANIFEST)
        license = s.license
        if license is None and (src / "README.md").is_file():
            from quantgrid.card import read_front_matter

            declared = read_front_matter((src / "README.md").read_text(encoding="utf-8")).get("license")
            license = declared if isinstance(declared, str) else None
        results = None
        if "eval/results.json" in contents:
            from quantgrid.eval.results import EvalResults

            results = EvalResults.model_validate_json(contents["eval/results.json"])
        write_adapter_card(tmp, name=s.repo_id.split("/")[-1], license=license, results=results)
        (tmp / MANIFEST).unlink()  # its hashes describe the private originals, not these copies
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    return s.out, written, left_out
