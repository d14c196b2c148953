"""The offline tiny bases of every family: what each copies from its real counterpart, and
tokenizer files that transformers 4.x reads as well as 5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgrid.errors import ModelError
from quantgrid.ml.tiny import TINY_FAMILIES

# Tokenizer classes transformers 4.x has (AutoTokenizer picks their fast versions).
TRANSFORMERS_4_CLASSES = {"PreTrainedTokenizerFast", "LlamaTokenizer", "LlamaTokenizerFast", "GemmaTokenizer",
                          "GemmaTokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast"}


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_each_family_is_what_it_stands_for(tiny_family_base, family):
    from quantgrid.ml.models import load_config, load_tokenizer

    base = Path(tiny_family_base(family))
    fam = TINY_FAMILIES[family]
    cfg = load_config(str(base))
    assert cfg.model_type == fam.model_type
    wide = (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads) != \
        cfg.hidden_size // cfg.num_attention_heads
    assert wide is fam.wide_heads
    assert (base / "tokenizer.model").is_file() is fam.tokenizer.startswith("spm")
    tcfg = json.loads((base / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] in TRANSFORMERS_4_CLASSES
    assert not isinstance(tcfg.get("extra_special_tokens"), list)  # 4.x wants a mapping there
    assert "vocab_file" not in tcfg and "backend" not in tcfg
    tok = load_tokenizer(str(base))
    text = "Question: What is a 3.5% coupon?\nAnswer: interest"
    ids = tok(text).input_ids
    assert (ids[0] == tok.bos_token_id) is (fam.tokenizer != "bpe-qwen2")
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_unknown_family_lists_the_known_ones(tmp_path):
    from quantgrid.ml.tiny import build_tiny_base

    with pytest.raises(ModelError, match="unknown tiny base family 'phi'") as e:
        build_tiny_base(tmp_path / "b", family="phi")
    assert "gemma" in e.value.hint and not (tmp_path / "b").exists()


def test_merged_sentencepiece_model_keeps_tokenizer_model(tiny_family_base, tmp_path):
    """llama.cpp's converter reads tokenizer.model: the merged model carries the base's."""
    from quantgrid.export.merged import export_merged
    from quantgrid.ml.models import attach_lora, load_base
    from quantgrid.recipe import Recipe

    base = tiny_family_base("llama-spm")
    model, _ = load_base(base)
    attach_lora(model, Recipe(base_model=base)).save_pretrained(tmp_path / "adapter")
    out = export_merged(tmp_path / "adapter", tmp_path / "merged", base)
    assert (out / "tokenizer.model").read_bytes() == (Path(base) / "tokenizer.model").read_bytes()
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] in TRANSFORMERS_4_CLASSES
