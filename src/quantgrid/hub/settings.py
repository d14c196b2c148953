"""Every setting of a hub, in one pydantic-settings model.

Precedence, highest first: explicit values (CLI flags) > ``QUANTGRID_HUB_*`` environment
variables > the YAML file given by ``--config`` (or ``QUANTGRID_HUB_CONFIG``) > defaults.

    settings = HubSettings.load(config="hub.yaml", storage_dir="/srv/hub")

``recipe`` is a :class:`quantgrid.recipe.Recipe`; in YAML or the environment it may be
an inline mapping / JSON object or a path to a recipe YAML file.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from quantgrid.errors import ConfigError, ConfigFileError
from quantgrid.hub.schemas import HUMAN_EVAL_DEFAULT_SAMPLE, HUMAN_EVAL_MAX_SAMPLE
from quantgrid.recipe import Recipe
from quantgrid.settings import describe_errors, settings_of
from quantgrid.utils import load_yaml_mapping

ENV_PREFIX = "QUANTGRID_HUB_"


class _YamlConfigSource(PydanticBaseSettingsSource):
    """Reads the ``--config hub.yaml`` file named by the ``config_file`` init value or env var."""

    def __init__(self, settings_cls: type[BaseSettings], config_file: Path | None):
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if config_file is None:
            return
        path = Path(config_file)
        if not path.is_file():
            raise ConfigFileError(f"hub config file not found: {path}",
                              hint="pass --config with a YAML file of hub settings (keys as in `quantgrid hub serve --help`)")
        data = load_yaml_mapping(path, f"hub config {path}")
        unknown = sorted(set(data) - set(settings_cls.model_fields))
        if unknown:
            raise ConfigError(f"{path}: unknown hub setting(s): {', '.join(unknown)}",
                              hint=f"known settings: {', '.join(sorted(settings_cls.model_fields))}")
        recipe = data.get("recipe")
        if isinstance(recipe, str) and not Path(recipe).is_absolute():
            # A recipe path in the config file is relative to the config file.
            data["recipe"] = str((path.parent / recipe).resolve())
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class HubSettings(BaseSettings):
    """A hub's configuration: where it stores things, what it accepts, and how hard it checks."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # ---- where things live ----
    config_file: Path | None = Field(None, description="YAML file of hub settings (any of these settings, "
                                     "by name)", json_schema_extra={"flag": "--config"})
    storage_dir: Path = Field(Path("quantgrid-hub"), description="directory for blobs, the benchmark secret and "
                              "releases", json_schema_extra={"flag": "--storage"})
    db_url: str | None = Field(None, description="SQLAlchemy database URL, e.g. postgresql+psycopg://u@h/db "
                               "(default: sqlite under --storage)", json_schema_extra={"flag": "--db"})
    public_url: str | None = Field(None, description="URL contributors use to reach this hub (shown in messages)")
    storage_url: str | None = Field(None, description="where submission blobs live: a directory (default "
                                    "<storage_dir>/blobs) or an fsspec URL such as s3://bucket/prefix")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for storage_url, "
                                            'e.g. {"endpoint_url": "http://127.0.0.1:9000"} for an S3-compatible server',
                                            # not a flag: the options may hold credentials, which `ps` would show
                                            json_schema_extra={"cli": False})

    # ---- what contributors must follow ----
    recipe: Annotated[Recipe, NoDecode] = Field(default_factory=Recipe, description="the hub's recipe: a YAML file "
                                                "(see `quantgrid recipe show`)", json_schema_extra={"flag": "--recipe"})
    base_model: str | None = Field(None, description="base model id or local path; the recipe's other settings "
                                   "stay standard")

    # ---- network ----
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    # ---- limits ----
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="largest accepted submission zip")
    rate_limit_per_minute: int = Field(120, ge=1, description="requests per user (or per IP when anonymous)")
    rate_limit_burst: int = Field(60, ge=1, description="requests a client may send at once before throttling")
    daily_submission_limit: int = Field(20, ge=1, description="new submissions per user per rolling 24 h")
    upload_read_timeout_seconds: float = Field(30.0, gt=0, description="an upload that sends nothing for this "
                                               "long is cut off with 408")
    max_concurrent_uploads: int = Field(32, ge=1, description="uploads one hub process reads at once (more get 503)")
    max_concurrent_uploads_per_user: int = Field(2, ge=1, description="uploads one user may send at once, "
                                                 "across every hub process (more get 429)")
    gc_grace_seconds: float = Field(3600.0, ge=0, description="`hub gc` and startup keep unreferenced blobs and "
                                    "staging directories younger than this (an upload may be about to commit)",
                                    validation_alias=AliasChoices("gc_grace_seconds", "grace"))

    # ---- jobs ----
    worker_enabled: bool = Field(True, description="`hub serve` also runs a job worker thread",
                                 json_schema_extra={"flag": "--worker/--no-worker"})
    worker_poll_seconds: float = Field(1.0, gt=0, description="seconds an idle worker waits between looks for jobs")
    job_lease_seconds: float = Field(900.0, gt=0, description="a job whose worker is silent this long is retried")
    job_max_attempts: int = Field(3, ge=1, description="a job that fails this many times stops, with a report")

    # ---- validation (used by the validation worker) ----
    # Not a flag: a secret on the command line shows in `ps`; use the environment or --config.
    benchmark_secret: SecretStr | None = Field(None, description="seeds the hidden benchmark; default: a secret file "
                                               "in storage_dir", json_schema_extra={"cli": False})
    benchmark_size: int = Field(500, ge=10, description="templated items in the hidden benchmark")
    benchmark_files: list[Path] = Field(default_factory=list, description="operator's own benchmark files (JSON/JSONL), "
                                        "added to the hidden benchmark; they never leave the hub (repeatable)",
                                        json_schema_extra={"flag": "--benchmark-file"})
    min_loss_improvement: float = Field(0.0, ge=0, description="extra margin, nats/token: the bootstrap 95% interval "
                                        "of (candidate - base) loss must reach below -margin (0 = match or beat)")
    ood_tolerance: float = Field(0.05, ge=0, description="largest allowed relative rise of out-of-domain loss "
                                 "(0.05 = 5%, as `quantgrid eval --ood-threshold`)")
    duplicate_cosine: float = Field(0.7, gt=0, le=1, description="delta-W cosine at or above which adapters are "
                                    "near-duplicates (calibrated in docs/validation.md)")
    duplicate_margin: float = Field(0.02, ge=0, description="ε: a near-duplicate must beat the original by this, nats/token")
    score_decimals: int = Field(3, ge=0, le=6, description="published scores are rounded to this many decimals")

    # ---- releases (used by quantgrid.hub.server.releases) ----
    release_schedule: str | None = Field("0 3 * * SUN", description='automatic releases: a cron expression in UTC '
                                         '(default "0 3 * * SUN", weekly) or "SUN 03:00"; "off" turns them off; '
                                         "a slot missed while the hub was down runs at startup")
    human_eval_sample: int = Field(HUMAN_EVAL_DEFAULT_SAMPLE, ge=0, le=HUMAN_EVAL_MAX_SAMPLE,
                                   description="answer pairs of each published release queued for blind human "
                                   "evaluation (a worker job after validations; 0: none)")

    @field_validator("release_schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        from quantgrid.merge.schedule import schedule_or_none

        try:
            return schedule_or_none(v)
        except ConfigError as e:
            raise ValueError(e.message) from None

    @model_validator(mode="after")
    def _base_model(self) -> HubSettings:
        if self.base_model is None:
            return self
        if "recipe" in self.model_fields_set:
            raise ConfigError("--recipe and --base-model both given",
                              hint="set base_model inside the recipe file, or pass only --base-model")
        local = Path(self.base_model).expanduser()
        name = str(local.resolve()) if local.exists() else self.base_model
        new = Recipe.from_dict({**self.recipe.model_dump(mode="json"), "base_model": name}, source="--base-model")
        object.__setattr__(self, "recipe", new)
        return self

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe(cls, v: Any) -> Any:
        if isinstance(v, (str, Path)):
            text = str(v).strip()
            if text.startswith("{"):
                return json.loads(text)
            return Recipe.load(text)
        return v

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        import os

        config = init_settings.init_kwargs.get("config_file") or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE") \
            or os.environ.get(f"{ENV_PREFIX}CONFIG")
        return (init_settings, env_settings, _YamlConfigSource(settings_cls, Path(config) if config else None))

    # ---- construction with good errors ----
    @classmethod
    def load(cls, config: str | Path | None = None, **overrides: Any) -> HubSettings:
        """Build settings; ``None`` overrides are ignored so unset CLI flags fall through to env/YAML."""
        values = {k: v for k, v in overrides.items() if v is not None}
        if config is not None:
            values["config_file"] = Path(config)
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(f"invalid hub settings: {describe_errors(e, settings_of(cls))}",
                              hint="fix the flag, the QUANTGRID_HUB_* variable or the --config entry named above") from None

    # ---- derived ----
    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.storage_dir / 'hub.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.storage_dir / "blobs"

    def benchmark_seed(self) -> str:
        """The hidden benchmark's secret: the setting, or one made once and kept in storage_dir."""
        if self.benchmark_secret is not None:
            return self.benchmark_secret.get_secret_value()
        from quantgrid.utils import atomic_write_text

        path = self.storage_dir / "benchmark_secret"
        if not path.exists():
            atomic_write_text(path, secrets.token_hex(32), mode=0o600)
        return path.read_text(encoding="utf-8").strip()

    def round_score(self, x: float | None) -> float | None:
        return None if x is None else round(float(x), self.score_decimals)
