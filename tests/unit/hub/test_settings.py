"""HubSettings precedence (flag > env > YAML > default) and the shared CLI options helper."""

from __future__ import annotations

import pytest

from quantgrid.cli.hub import hub_settings
from quantgrid.errors import ConfigError
from quantgrid.hub.settings import HubSettings
from quantgrid.recipe import Recipe


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE", "QUANTGRID_HUB_PORT",
                "QUANTGRID_HUB_DB_URL", "QUANTGRID_HUB_STORAGE_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_defaults_put_sqlite_under_storage(tmp_path):
    s = HubSettings.load(storage_dir=tmp_path)
    assert s.database_url == f"sqlite:///{(tmp_path / 'hub.db').resolve()}"
    assert s.recipe == Recipe()
    assert s.port == 8080 and s.worker_enabled


def test_precedence_flag_over_env_over_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "hub.yaml"
    cfg.write_text("port: 9000\nhost: 0.0.0.0\nrecipe:\n  base_model: org/from-yaml\n")
    assert HubSettings.load(config=cfg).port == 9000
    monkeypatch.setenv("QUANTGRID_HUB_PORT", "9100")
    s = HubSettings.load(config=cfg)
    assert (s.port, s.host, s.recipe.base_model) == (9100, "0.0.0.0", "org/from-yaml")
    assert HubSettings.load(config=cfg, port=9200).port == 9200
    assert HubSettings.load(config=cfg, port=None).port == 9100  # unset flags fall through


def test_recipe_from_path_relative_to_config_and_from_env_json(tmp_path, monkeypatch):
    Recipe(base_model="org/file-base").save(tmp_path / "r.yaml")
    (tmp_path / "hub.yaml").write_text("recipe: r.yaml\n")
    assert HubSettings.load(config=tmp_path / "hub.yaml").recipe.base_model == "org/file-base"
    monkeypatch.setenv("QUANTGRID_HUB_RECIPE", '{"base_model": "org/env-base"}')
    assert HubSettings.load().recipe.base_model == "org/env-base"


def test_bad_values_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--port"):
        HubSettings.load(port=70000)
    (tmp_path / "bad.yaml").write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown hub setting.*prot"):
        HubSettings.load(config=tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        HubSettings.load(config=tmp_path / "missing.yaml")


def test_cli_helper_base_model_and_recipe(tmp_path):
    recipe = Recipe(base_model="org/x")
    recipe.lora.r = 8
    recipe.save(tmp_path / "r.yaml")
    s = hub_settings(db="sqlite:////tmp/x.db", storage=tmp_path, recipe=tmp_path / "r.yaml")
    assert s.recipe.lora.r == 8 and s.database_url == "sqlite:////tmp/x.db"
    base_dir = tmp_path / "tiny"
    base_dir.mkdir()
    s = hub_settings(storage=tmp_path, base_model=str(base_dir))
    assert s.recipe.base_model == str(base_dir.resolve())  # a local path is made absolute
    assert s.recipe.lora == Recipe().lora
    with pytest.raises(ConfigError, match="--recipe and --base-model"):
        hub_settings(recipe=tmp_path / "r.yaml", base_model="org/y")


def test_round_score_and_benchmark_secret_persist(tmp_path):
    s = HubSettings.load(storage_dir=tmp_path, score_decimals=2)
    assert s.round_score(0.123456) == 0.12 and s.round_score(None) is None
    first = s.benchmark_seed()
    assert len(first) == 64 and s.benchmark_seed() == first
    assert (tmp_path / "benchmark_secret").stat().st_mode & 0o777 == 0o600
