"""Settings resolution: recipe + --config + flags -> one validated TrainConfig."""

from __future__ import annotations

import pytest

from quantgrid.errors import ConfigError
from quantgrid.recipe import Recipe


def test_overrides_land_in_recipe_and_run():
    from quantgrid.ml.train_config import resolve_config

    cfg = resolve_config(Recipe(), {"dataset": "d.jsonl", "output_dir": "out", "lora_rank": 8, "num_epochs": 2,
                                    "lr": 1e-4, "max_steps": 5, "include_dataset": True, "eval_dataset": None})
    assert cfg.recipe.lora.r == 8 and cfg.recipe.training.epochs == 2 and cfg.recipe.training.lr == 1e-4
    assert cfg.run.max_steps == 5 and cfg.run.include_dataset and cfg.run.eval_dataset is None
    assert cfg.recipe.standard_fields_differ(Recipe()) == ["lora.r"]
    # the recipe defaults stay as they were
    assert cfg.recipe.training.batch_size == Recipe().training.batch_size


def test_invalid_value_names_the_users_flag():
    from quantgrid.ml.train_config import resolve_config

    with pytest.raises(ConfigError, match="--lora-rank") as e:
        resolve_config(Recipe(), {"dataset": "d", "output_dir": "o", "lora_rank": 0})
    assert e.value.hint
    with pytest.raises(ConfigError, match="--batch-size"):
        resolve_config(Recipe(), {"dataset": "d", "output_dir": "o", "batch_size": -1})


def test_unknown_setting_and_missing_required():
    from quantgrid.ml.train_config import resolve_config

    with pytest.raises(ConfigError, match="unknown training setting 'lora_rnak'"):
        resolve_config(Recipe(), {"dataset": "d", "output_dir": "o", "lora_rnak": 8})
    with pytest.raises(ConfigError, match="no dataset given") as e:
        resolve_config(Recipe(), {"output_dir": "o"})
    assert "--dataset" in e.value.hint


def test_config_file_flat_and_saved_round_trip(tmp_path):
    from quantgrid.ml.train_config import load_config_file, resolve_config

    flat = tmp_path / "train.yaml"
    flat.write_text("dataset: data.jsonl\noutput_dir: out\nlora_rank: 4\ngrad_accum: 2\nschedule: linear\n")
    cfg = resolve_config(Recipe(), load_config_file(flat))
    assert (cfg.recipe.lora.r, cfg.recipe.training.grad_accum, cfg.recipe.training.schedule) == (4, 2, "linear")

    saved = tmp_path / "train_config.yaml"  # the shape a run writes to training/train_config.yaml
    saved.write_text(cfg.to_yaml())
    again = resolve_config(Recipe(), load_config_file(saved))
    assert again == cfg


def test_config_file_errors(tmp_path):
    from quantgrid.ml.train_config import load_config_file

    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(bad)
