"""Callers that only read an adapter's config go through lora_files: a broken
adapter_config.json is the caller's own clear error, never a JSONDecodeError traceback."""

from __future__ import annotations

import json

import pytest

from quantgrid import lora_files
from quantgrid.cli.export import _base_for
from quantgrid.errors import ExportError, ModelError
from quantgrid.ml.models import read_adapter_base
from quantgrid.serve.vllm import adapter_rank


def _adapter(tmp_path, config):
    d = tmp_path / "adapter"
    d.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (d / lora_files.CONFIG).write_text(text)
    return d


def test_export_base_from_the_peft_config(tmp_path):
    d = _adapter(tmp_path, {"r": 8, "base_model_name_or_path": "org/base"})
    assert _base_for(d, None) == "org/base"
    assert _base_for(d, "other/base") == "other/base"


def test_export_base_unknown_or_unreadable(tmp_path):
    d = _adapter(tmp_path, {"r": 8, "base_model_name_or_path": None})
    with pytest.raises(ExportError, match="cannot tell which base"):
        _base_for(d, None)
    (d / lora_files.CONFIG).write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        _base_for(d, None)


def test_vllm_rank_is_the_largest_pattern_rank(tmp_path):
    d = _adapter(tmp_path, {"peft_type": "LORA", "r": 8, "rank_pattern": {"q_proj": 32}})
    assert adapter_rank(d) == 32


def test_vllm_rank_errors(tmp_path):
    with pytest.raises(ModelError, match="not an adapter directory"):
        adapter_rank(tmp_path)
    d = _adapter(tmp_path, "[1, 2")
    with pytest.raises(ModelError, match="not valid JSON"):
        adapter_rank(d)
    (d / lora_files.CONFIG).write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelError, match="not a LoRA adapter config"):
        adapter_rank(d)


def test_adapter_base_from_the_peft_config(tmp_path):
    assert read_adapter_base(tmp_path) == (None, None)
    d = _adapter(tmp_path, {"r": 8, "base_model_name_or_path": "quantgrid-tiny-test"})
    assert read_adapter_base(d) == ("quantgrid-tiny-test", None)
    (d / lora_files.CONFIG).write_text("[]")
    with pytest.raises(ModelError, match="must be a JSON object"):
        read_adapter_base(d)
