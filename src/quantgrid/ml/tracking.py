"""Experiment trackers (``report_to``): the numbers the terminal shows, in TensorBoard or W&B.

Each optimizer step logs ``train/loss``, ``train/learning_rate`` and
``train/tokens_per_second``; each held-out evaluation logs ``eval/loss`` (the names
transformers' Trainer uses, so dashboards built for it read these runs too).

- ``tensorboard``: event files written by torch's ``SummaryWriter`` into
  ``<logging_dir>/<run_name>/`` (default ``<output>/training/runs/``; view them with
  ``tensorboard --logdir <output>/training/runs``). Needs the ``tensorboard`` package
  (``pip install 'quantgrid[logging]'``).
- ``wandb``: a Weights & Biases run. Offline by default, so it works with no account and
  no network (``wandb sync <dir>`` uploads it later); ``WANDB_MODE=online`` (after
  ``wandb login``) logs live. ``WANDB_PROJECT`` names the project (default ``quantgrid``).

The trackers never see training data: only numbers and the run's settings.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from quantgrid.errors import ConfigError

TRACKERS = ("tensorboard", "wandb")


def parse_report_to(value: str | list[str] | None) -> list[str]:
    """'tensorboard,wandb' | ['wandb'] | 'none' | None -> the tracker names, checked."""
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return list(TRACKERS)
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"--report-to: unknown tracker {unknown[0]!r}",
                          hint=f"choose from {', '.join(TRACKERS)} (comma-separated), all, or none")
    return list(dict.fromkeys(names))


def default_run_name(output_dir: str | Path) -> str:
    return f"{Path(output_dir).name}-{time.strftime('%Y%m%d-%H%M%S')}"


class Trackers:
    """The trackers of one run. ``log`` and ``close`` do nothing when none is configured."""

    def __init__(self, names: list[str], *, logging_dir: str | Path, run_name: str, config: dict[str, Any]):
        self.names = names
        self.dir = Path(logging_dir) / run_name
        self._tb = None
        self._wandb = None
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--report-to tensorboard: the tensorboard package is not installed",
                                  hint="pip install 'quantgrid[logging]' (or pip install tensorboard)") from None
            self._tb = SummaryWriter(log_dir=str(self.dir))
            import yaml

            self._tb.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)
        if "wandb" in names:
            try:
                import wandb
            except ImportError:
                raise ConfigError("--report-to wandb: the wandb package is not installed",
                                  hint="pip install 'quantgrid[logging]' (or pip install wandb)") from None
            self.dir.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "quantgrid"), name=run_name,
                                     dir=str(self.dir), config=config,
                                     mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new")

    @property
    def active(self) -> bool:
        return bool(self.names)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
