"""Training checkpoints: everything needed to continue a run as if it was never stopped.

A checkpoint is a directory ``step-000050/`` holding the adapter (PEFT's own files),
the optimizer and scheduler state, the RNG state (LoRA dropout draws from it) and
``trainer_state.json`` (step, epoch, position in the epoch's data order, loss history,
and the run identity that ``--resume`` checks). Each one is written with
``atomic_dir``, so a crash while saving leaves the previous checkpoint intact.

Checkpoints live beside the output, in ``<output>.checkpoints/``, never inside it: the
packaged adapter can't pick up optimizer state by accident. The trainer deletes the
folder when the adapter has been written.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantgrid import lora_files
from quantgrid.errors import ConfigError
from quantgrid.utils import atomic_dir

STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
KEEP_LAST = 2  # older checkpoints are pruned; two so a torn disk never leaves zero


@dataclass
class TrainState:
    """Where a run is. ``position`` counts micro-batches done in the current epoch."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    tokens_seen: int = 0
    loss_tokens_seen: int = 0
    train_seconds: float = 0.0  # wall-clock time in training steps (not evals or checkpoints)
    train_cpu_seconds: float = 0.0  # CPU time of this process in those steps (robust on a shared machine)
    history: list[dict[str, Any]] = field(default_factory=list)  # {"step", "loss", "lr", "tokens"}
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", "epoch", "eval_loss"}
    best_eval: float | None = None
    bad_evals: int = 0  # evals in a row without improvement, for early stopping
    best_step: int | None = None  # the eval with the lowest loss after step 0 (load_best_model_at_end)
    seed: int | None = None  # the run's seed: a resumed run continues with it
    identity: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def checkpoints_dir(output_dir: str | Path) -> Path:
    out = Path(output_dir)
    return out.with_name(out.name + ".checkpoints")


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (partial ones are hidden temp dirs, never listed)."""
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / STATE).is_file()]
    return [p for _, p in sorted(found)]


BEST = "best_adapter.safetensors"


def save_checkpoint(ckpt_root: Path, model, optimizer, scheduler, state: TrainState,
                    best: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``step-NNNNNN`` atomically and prune older ones. ``model`` is the PeftModel;
    ``best`` the adapter weights of the best evaluation so far, when they are being kept."""
    from safetensors.torch import save_file

    path = ckpt_root / f"step-{state.step:06d}"
    with atomic_dir(path, overwrite=True) as tmp:
        model.save_pretrained(str(tmp))  # adapter_config.json + adapter_model.safetensors, adapter only
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / BEST))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        (tmp / STATE).write_text(json.dumps(asdict(state), indent=1))
    for old in list_checkpoints(ckpt_root)[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    """Restore adapter weights, optimizer, scheduler and RNG from ``path``; return its state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / lora_files.WEIGHTS))
    set_peft_model_state_dict(model, weights)
    # weights_only: these files hold tensors and plain containers, never code.
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainState.from_dict(json.loads((path / STATE).read_text()))


def load_best(path: Path) -> dict[str, torch.Tensor] | None:
    """The best-evaluation weights saved with a checkpoint, if any."""
    from safetensors.torch import load_file

    return load_file(str(path / BEST)) if (path / BEST).is_file() else None


def checkpoint_seed(output_dir: str | Path) -> int | None:
    """The seed of the unfinished run whose checkpoints are beside ``output_dir`` (for --resume)."""
    found = list_checkpoints(checkpoints_dir(output_dir))
    if not found:
        return None
    try:
        return json.loads((found[-1] / STATE).read_text()).get("seed")
    except ValueError:
        return None


def latest_checkpoint(output_dir: str | Path, identity: dict[str, Any]) -> Path:
    """The checkpoint ``--resume`` continues from; refuses one from a different run."""
    root = checkpoints_dir(output_dir)
    found = list_checkpoints(root)
    if not found:
        raise ConfigError(f"--resume: no checkpoint found in {root}",
                          hint="checkpoints are written every --save-steps steps; run without --resume to start over")
    last = found[-1]
    saved = json.loads((last / STATE).read_text()).get("identity", {})
    changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if changed:
        raise ConfigError(
            f"--resume: the checkpoint in {last} is from a different run ({', '.join(changed)} changed)",
            hint="resume with the same data and settings, or delete the checkpoint folder to start over")
    return last
