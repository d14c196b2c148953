"""hf://OWNER/NAME and Hub ids from a local Hugging Face cache (laid out as huggingface_hub does), offline."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")

from quantgrid.errors import ConfigError  # noqa: E402
from quantgrid.hf_cache import parse_ref, resolve_local  # noqa: E402


def _cache_repo(cache: Path, repo_id: str, files_from: Path, commit: str = "a" * 40) -> Path:
    """models--OWNER--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for src in sorted(p for p in files_from.rglob("*") if p.is_file()):
        rel = src.relative_to(files_from)
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    c = tmp_path / "hf-cache"
    c.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(c))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return c


def test_parse_ref():
    assert parse_ref("hf://ada/sec@v2").repo_id == "ada/sec" and parse_ref("hf://ada/sec@v2").revision == "v2"
    assert parse_ref("ada/sec").revision is None
    assert parse_ref("./adapters/sec") is None and parse_ref("/abs/path") is None and parse_ref("sec") is None
    with pytest.raises(ConfigError, match="not a Hugging Face repo id"):
        parse_ref("hf://no spaces/x")


def test_cached_ids_resolve_offline_and_missing_ones_say_how_to_fix(cache, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    snap = _cache_repo(cache, "ada/quantgrid-sec", src)
    assert Path(resolve_local("hf://ada/quantgrid-sec")) == snap
    assert Path(resolve_local("hf://ada/quantgrid-sec@main")) == snap
    assert Path(resolve_local("ada/quantgrid-sec")) == snap  # a bare id that is cached
    assert resolve_local("bob/not-cached") == "bob/not-cached"  # left to the caller's own "not found"
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache") as e:
        resolve_local("hf://bob/not-cached")
    assert "huggingface-cli download bob/not-cached" in e.value.hint
    local = tmp_path / "adapters" / "sec"
    local.mkdir(parents=True)
    assert resolve_local(str(local)) == str(local)


def test_train_from_a_cached_base_and_load_the_adapter_from_the_cache(cache, tiny_base, tmp_path):
    torch = pytest.importorskip("torch")
    from typer.testing import CliRunner

    from quantgrid.adapter import read_manifest
    from quantgrid.cli import app
    from quantgrid.data import load_examples, write_records
    from quantgrid.ml.models import load_adapter, load_base

    _cache_repo(cache, "quantgrid-test/tiny-base", Path(tiny_base))
    data = write_records(tmp_path / "d.jsonl", load_examples("builtin:finance-train")[:20])
    out = tmp_path / "adapter"
    r = CliRunner().invoke(app, ["train", "--base-model", "hf://quantgrid-test/tiny-base", "--dataset", str(data),
                                 "--output", str(out), "--max-steps", "1", "--progress", "none"])
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.base_model.name == m.recipe["base_model"] == "quantgrid-test/tiny-base"  # the id, not a cache path
    saved = (out / "training" / "train_config.yaml").read_text()
    assert "hf://quantgrid-test/tiny-base" in saved and "snapshots" not in saved  # rerunnable elsewhere
    _cache_repo(cache, "ada/quantgrid-sec", out, commit="b" * 40)
    model, _tok = load_base(tiny_base)
    adapted = load_adapter(model, resolve_local("hf://ada/quantgrid-sec"))
    ours = load_adapter(load_base(tiny_base)[0], out)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(adapted(input_ids=ids).logits, ours(input_ids=ids).logits)
