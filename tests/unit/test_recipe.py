"""The recipe: standard values, a stable hash, YAML round trip, clear errors, and its CLI."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from quantgrid.cli import app
from quantgrid.errors import ConfigError
from quantgrid.recipe import Recipe

runner = CliRunner()


def test_standard_values():
    r = Recipe()
    assert (r.lora.r, r.lora.alpha, r.lora.dropout, r.lora.bias) == (16, 32, 0.05, "none")
    assert r.lora.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (r.training.epochs, r.training.batch_size, r.training.lr, r.training.max_seq_length) == (3, 4, 2e-4, 1024)
    assert r.lora.scaling == 2.0


def test_hash_is_stable_whatever_the_key_order(tmp_path):
    data = Recipe().model_dump(mode="json")
    reordered = {k: data[k] for k in reversed(list(data))}
    reordered["lora"] = {k: data["lora"][k] for k in reversed(list(data["lora"]))}
    reordered["lora"]["target_modules"] = ["v_proj", "q_proj", "o_proj", "k_proj"]
    assert Recipe.from_dict(reordered).hash() == Recipe().hash()
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(reordered, sort_keys=False))
    assert Recipe.load(p).hash() == Recipe().hash()
    assert Recipe(training={"lr": 1e-4}).hash() != Recipe().hash()
    # a run's own seed is not part of the recipe everyone shares
    assert Recipe(training={"seed": 123456}).hash() == Recipe().hash()


def test_yaml_round_trip(tmp_path):
    r = Recipe(prompt_template="mistral", training={"epochs": 1, "seed": 7})
    p = r.save(tmp_path / "recipe.yaml")
    assert Recipe.load(p) == r


def test_invalid_values_are_clear():
    for data, fragment in [({"lora": {"r": 0}}, "lora.r: Input should be greater than or equal to 1"),
                           ({"prompt_template": "llama"}, "unknown prompt_template 'llama'"),
                           ({"training": {"lr": -1}}, "training.lr: Input should be greater than 0"),
                           ({"lora": {"rank": 8}}, "lora.rank: Extra inputs are not permitted")]:
        try:
            Recipe.from_dict(data)
        except ConfigError as e:
            assert fragment in e.message, e.message
            assert e.hint
        else:
            raise AssertionError(f"{data} was accepted")


def test_cli_show_hash_and_check(tmp_path):
    r = runner.invoke(app, ["recipe", "show"])
    assert r.exit_code == 0
    assert Recipe.from_dict(yaml.safe_load(r.output)) == Recipe()
    assert runner.invoke(app, ["recipe", "hash"]).output.strip() == Recipe().hash()
    p = tmp_path / "r.yaml"
    assert runner.invoke(app, ["recipe", "show", "--out", str(p)]).exit_code == 0
    assert runner.invoke(app, ["recipe", "hash", str(p)]).output.strip() == Recipe().hash()
    ok = runner.invoke(app, ["recipe", "check", str(p)])
    assert ok.exit_code == 0 and "valid" in ok.output and "non-standard" not in ok.output
    p.write_text(Recipe(lora={"r": 8}).to_yaml())
    assert "non-standard: lora.r" in runner.invoke(app, ["recipe", "check", str(p)]).output
    p.write_text("lora: {r: -3}\n")
    bad = runner.invoke(app, ["recipe", "check", str(p)])
    assert bad.exit_code == 2 and "lora.r: Input should be greater than or equal to 1" in bad.output
    missing = runner.invoke(app, ["recipe", "hash", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "recipe file not found" in missing.output
