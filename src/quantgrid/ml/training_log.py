"""What a training run tells people: the live progress display, TRAINING_LOG.md and loss.png."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

from quantgrid.ml.checkpoint import TrainState

# ---------------------------------------------------------------- live progress


class Progress:
    """A Rich progress bar (loss, tokens/s, ETA) on a terminal; plain log lines otherwise.

    Notebooks and CI have no TTY and turn a redrawn bar into thousands of lines, so there
    we print one line every ``log_every`` steps instead. ``mode="none"`` is silent.
    """

    def __init__(self, total_steps: int, *, start_step: int = 0, mode: str = "auto", log_every: int = 10,
                 console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        if mode == "auto":
            mode = "rich" if self.console.is_terminal else "plain"
        self.mode = mode
        self.total = total_steps
        self.log_every = max(1, log_every)
        self._t0 = time.perf_counter()
        self._start_step = start_step
        self._bar = None
        if mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, loss="-", tps="-")
            self._bar.start()

    def update(self, step: int, loss: float, tokens_per_s: float, lr: float) -> None:
        if self.mode == "rich":
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}")
        elif self.mode == "plain" and (step % self.log_every == 0 or step == self.total):
            done = step - self._start_step
            elapsed = time.perf_counter() - self._t0
            eta = elapsed / done * (self.total - step) if done else 0.0
            self.console.print(f"step {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  "
                               f"{tokens_per_s:,.0f} tok/s  eta {_hms(eta)}", highlight=False)

    def note(self, text: str, *, always: bool = False) -> None:
        """A line above the bar; ``always`` prints it even in ``mode="none"`` (warnings)."""
        if self.mode != "none" or always:
            self.console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ---------------------------------------------------------------- hardware


def hardware_summary(device: str) -> str:
    import torch

    from quantgrid.ml.models import cpu_threads

    parts = [f"{platform.system()} {platform.machine()}", f"python {sys.version.split()[0]}",
             f"torch {torch.__version__}", f"{cpu_threads()} CPU threads"]
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        parts.append(f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB)")
    return ", ".join(parts)


# ---------------------------------------------------------------- files in training/


def loss_table(state: TrainState, max_rows: int = 25) -> str:
    """Markdown table of the logged train loss (thinned to ``max_rows``) and every eval."""
    evals = {e["step"]: e["eval_loss"] for e in state.evals}
    rows = state.history
    if len(rows) > max_rows:
        stride = len(rows) / max_rows
        rows = [rows[int(i * stride)] for i in range(max_rows - 1)] + [rows[-1]]
    steps = sorted({r["step"] for r in rows} | set(evals))
    by_step = {r["step"]: r for r in state.history}
    lines = ["| step | train loss | eval loss | learning rate |", "|---:|---:|---:|---:|"]
    for s in steps:
        r = by_step.get(s)
        train = f"{r['loss']:.4f}" if r else ""
        lr = f"{r['lr']:.2e}" if r else ""
        ev = f"{evals[s]:.4f}" if s in evals else ""
        lines.append(f"| {s} | {train} | {ev} | {lr} |")
    return "\n".join(lines)


def training_log_md(*, config: dict[str, Any], data: dict[str, Any], state: TrainState, stopped: str,
                    hardware: str, base: dict[str, Any], seconds: float, non_standard: list[str],
                    kept: dict[str, Any] | None = None) -> str:
    """The run's section of TRAINING_LOG.md. ``kept``: the evaluation whose weights were
    written ({"step", "eval_loss"}) when best-checkpoint selection was on."""
    recipe = config["recipe"]
    lora, tr = recipe["lora"], recipe["training"]
    tps = state.tokens_seen / state.train_seconds if state.train_seconds else 0.0
    first_eval = state.evals[0]["eval_loss"] if state.evals else None
    last_eval = state.evals[-1]["eval_loss"] if state.evals else None
    lines = [
        "# Training log",
        "",
        "Written by `quantgrid train`. The exact settings are in `train_config.yaml`; the curves in `loss.png`.",
        "",
        "## Data",
        "",
        f"- Source: `{data['source']}` ({data['format']})",
        f"- Records read: {data['n_read']}; skipped as invalid: {data['n_skipped']}",
        f"- Dropped because the prompt fills max_seq_length ({tr['max_seq_length']}): {data['n_too_long']}; "
        f"completion truncated: {data['n_truncated']}",
        f"- Training examples: {data['n_train']} ({data['train_tokens']:,} tokens, "
        f"{data['train_loss_tokens']:,} of them completion tokens that carry the loss)",
        f"- Held-out eval examples: {data['n_eval']} ({data['eval_source']})",
        f"- Dataset fingerprint: `{data['fingerprint_hash']}`",
        "",
        "## Model and hyperparameters",
        "",
        f"- Base model: `{base['name']}` (fingerprint `{base['fingerprint']}`), loaded as {base['load']}",
        f"- LoRA: rank {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, "
        f"targets {', '.join(lora['target_modules'])}"
        + (f" — **non-standard** ({', '.join(non_standard)})" if non_standard else " (the standard recipe)"),
        f"- Epochs {tr['epochs']}, batch size {tr['batch_size']}, gradient accumulation {tr['grad_accum']} "
        f"(effective batch {tr['batch_size'] * tr['grad_accum']} examples)",
        f"- Learning rate {tr['lr']}, {tr['schedule']} schedule, warmup ratio {tr['warmup_ratio']}, "
        f"weight decay {tr['weight_decay']}, gradient clipping {tr['max_grad_norm']}",
        f"- Max sequence length {tr['max_seq_length']}, seed {tr['seed']}"
        f"{' (drawn for this run; pass --seed ' + str(tr['seed']) + ' to repeat it)' if data.get('seed_drawn') else ''}"
        f", prompt template `{recipe['prompt_template']}`",
        f"- Held-out evaluation: every {config['run']['eval_steps']} steps" if config["run"].get("eval_steps")
        else "- Held-out evaluation: at the end of each epoch",
        f"- Loss on completion tokens only; padding-free packed batches; backend {config['run']['backend']}",
        "",
        "## Result",
        "",
        f"- Optimizer steps: {state.step}; epochs started: {state.epoch + (1 if state.position else 0)}; "
        f"stopped because: {stopped}",
        f"- Tokens trained on: {state.tokens_seen:,} ({tps:,.0f} tokens/s)",
    ]
    if first_eval is not None:
        lines.append(f"- Eval loss (nats/token): {first_eval:.4f} before training (the base) -> {last_eval:.4f}")
    if kept is not None:
        lines.append(f"- Kept weights: step {kept['step']} (the lowest held-out loss, {kept['eval_loss']:.4f}, "
                     f"of {len(state.evals) - 1} evaluations; load_best_model_at_end); the last step was {state.step}")
    elif config["run"].get("load_best_model_at_end"):
        lines.append(f"- Kept weights: the last step ({state.step}); no evaluation after training started "
                     "beat it")
    lines += [
        f"- Time taken: {_hms(seconds)} ({seconds:.1f} s, {state.train_seconds:.1f} s in training steps)",
        f"- Hardware: {hardware}",
        "",
        "## Loss",
        "",
        loss_table(state),
        "",
    ]
    return "\n".join(lines)


LOG_BEGIN = "<!-- quantgrid train: begin. Training rewrites this section; notes outside it are kept. -->"
LOG_END = "<!-- quantgrid train: end -->"


def merge_log(existing: str | None, section: str, *, ours: bool) -> str:
    """TRAINING_LOG.md with this run's ``section``, keeping what the user wrote.

    The file is shared: contributors document their data sources there, and data
    commands record provenance in it. Training replaces only the text between its
    markers; a file without markers is kept whole with the section after it, unless
    ``ours`` (an older run wrote it before the markers existed).
    """
    block = f"{LOG_BEGIN}\n{section.rstrip()}\n{LOG_END}\n"
    if not existing or (ours and LOG_BEGIN not in existing):
        return block
    start, end = existing.find(LOG_BEGIN), existing.find(LOG_END)
    if start != -1 and end > start:
        rest = existing[end + len(LOG_END):].lstrip("\n")
        return existing[:start] + block + ("\n" + rest if rest else "")
    return existing.rstrip() + "\n\n" + block


def plot_losses(state: TrainState, path: Path) -> None:
    """Train and eval loss curves. Agg backend: works with no display (servers, CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if state.history:
            ax.plot([r["step"] for r in state.history], [r["loss"] for r in state.history], label="train")
        if state.evals:
            ax.plot([e["step"] for e in state.evals], [e["eval_loss"] for e in state.evals], "o-", label="eval")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats / completion token)")
        ax.set_title("quantgrid train")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
