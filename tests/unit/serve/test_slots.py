"""Adapter registry and LRU slot bookkeeping."""

from __future__ import annotations

import json

import pytest

from quantgrid.errors import ModelError
from quantgrid.serve.slots import SlotTable, describe_adapter, keywords_from, read_adapter


def test_slot_table_lru_eviction_skips_busy_slots():
    t = SlotTable(2)
    assert t.acquire("a") == (0, True, None)
    assert t.acquire("b") == (1, True, None)
    assert t.acquire("c") is None  # both busy: the request must wait
    t.release(0)
    assert t.acquire("a") == (0, False, None)  # still loaded: no reload
    t.release(0)
    t.release(1)  # now b is least recently used... a was released first, b last
    assert t.acquire("c") == (0, True, "a")
    assert t.loaded() == ["c", "b"]
    assert t.acquire("b") == (1, False, None)
    t.forget("c")
    assert t.acquire("d") == (0, True, None)


def test_slot_table_refcounts_shared_adapter():
    t = SlotTable(1)
    t.acquire("a")
    t.acquire("a")
    t.release(0)
    assert t.acquire("b") is None  # one user still holds a
    t.release(0)
    assert t.acquire("b") == (0, True, "a")


def test_read_adapter_parses_peft_files(adapters):
    w = read_adapter(adapters["bonds"])
    assert w.rank == 4 and w.scaling == pytest.approx(2.0)
    assert set(w.factors) == {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")}
    a, b = w.factors["model.layers.0.self_attn.q_proj"]
    assert a.shape == (4, 64) and b.shape == (64, 4)


def test_describe_adapter_reads_manifest_keywords(adapters):
    info = describe_adapter("options", adapters["options"])
    assert "volatility" in info.keywords and "greeks" in info.keywords
    assert "the" not in keywords_from("the yield of the bond")


def test_bad_adapter_dirs_fail_clearly(tmp_path, adapters):
    with pytest.raises(ModelError, match="not an adapter directory"):
        describe_adapter("x", tmp_path)
    d = tmp_path / "dora"
    d.mkdir()
    cfg = json.loads((adapters["bonds"] / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (d / "adapter_model.safetensors").write_bytes((adapters["bonds"] / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="DoRA"):
        read_adapter(d)
