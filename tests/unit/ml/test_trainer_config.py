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


HF_NAMES = {  # Hugging Face TrainingArguments / TRL name -> (where it lands, the value given)
    "num_train_epochs": ("recipe.training.epochs", 2.0),
    "per_device_train_batch_size": ("recipe.training.batch_size", 2),
    "gradient_accumulation_steps": ("recipe.training.grad_accum", 8),
    "learning_rate": ("recipe.training.lr", 1e-4),
    "lr_scheduler_type": ("recipe.training.schedule", "linear"),
    "weight_decay": ("recipe.training.weight_decay", 0.01),
    "max_grad_norm": ("recipe.training.max_grad_norm", 0.5),
    "seed": ("recipe.training.seed", 7),
    "warmup_steps": ("run.warmup_steps", 3),
    "logging_steps": ("run.log_every", 5),
    "save_strategy": ("run.save_strategy", "epoch"),
    "save_steps": ("run.save_steps", 20),
    "eval_steps": ("run.eval_steps", 10),
    "max_steps": ("run.max_steps", 40),
    "bf16": ("run.dtype", "bfloat16"),
}


def _at(cfg, path):
    node = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def test_training_arguments_names_in_python():
    from quantgrid.ml.train_config import resolve_config
    from quantgrid.ml.trainer import QuantGridTrainer

    values = {k: v for k, (_, v) in HF_NAMES.items()} | {"bf16": True}
    cfg = resolve_config(Recipe(), {"dataset": "d.jsonl", "output_dir": "out", **values})
    for name, (path, want) in HF_NAMES.items():
        assert _at(cfg, path) == want, name
    # the trainer's keyword API takes the same names (no model is loaded to build the config)
    cfg2 = QuantGridTrainer().config("d.jsonl", "out", learning_rate=3e-4, num_train_epochs=1, fp16=True)
    assert (cfg2.recipe.training.lr, cfg2.recipe.training.epochs, cfg2.run.dtype) == (3e-4, 1, "float16")


def test_training_arguments_names_in_config_file(tmp_path):
    from quantgrid.ml.train_config import load_config_file, resolve_config

    f = tmp_path / "train.yaml"
    lines = [f"{k}: {'true' if k == 'bf16' else v}" for k, (_, v) in HF_NAMES.items()]
    f.write_text("dataset: d.jsonl\noutput_dir: out\n" + "\n".join(lines) + "\n")
    cfg = resolve_config(Recipe(), load_config_file(f))
    for name, (path, want) in HF_NAMES.items():
        assert _at(cfg, path) == want, name
    # in the nested shape of a saved train_config.yaml too
    nested = tmp_path / "nested.yaml"
    nested.write_text("recipe:\n  training:\n    learning_rate: 0.001\nrun:\n  dataset: d\n  output_dir: o\n")
    assert resolve_config(Recipe(), load_config_file(nested)).recipe.training.lr == 0.001


def test_unknown_names_get_the_nearest_valid_one(tmp_path):
    from quantgrid.ml.train_config import load_config_file, resolve_config

    with pytest.raises(ConfigError, match="unknown training setting 'learning_rat'") as e:
        resolve_config(Recipe(), {"dataset": "d", "output_dir": "o", "learning_rat": 1e-4})
    assert "learning_rate" in e.value.hint
    f = tmp_path / "train.yaml"
    f.write_text("num_train_epoch: 2\n")
    with pytest.raises(ConfigError, match="num_train_epoch") as e:
        load_config_file(f)
    assert "num_train_epochs" in e.value.hint and str(f) in e.value.message


def test_half_precision_switches_and_dtype_must_agree():
    from quantgrid.ml.train_config import resolve_config

    base = {"dataset": "d", "output_dir": "o"}
    assert resolve_config(Recipe(), {**base, "bf16": True, "dtype": "bfloat16"}).run.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="disagree"):
        resolve_config(Recipe(), {**base, "bf16": True, "fp16": True})
    with pytest.raises(ConfigError, match="disagree"):
        resolve_config(Recipe(), {**base, "fp16": True, "dtype": "float32"})


def test_early_stopping_error_names_the_real_flag():
    from quantgrid.ml.train_config import resolve_config

    with pytest.raises(ConfigError, match="--early-stopping: ") as e:
        resolve_config(Recipe(), {"dataset": "d", "output_dir": "o", "early_stopping_patience": 0})
    assert "--early-stopping-patience" not in e.value.message
