"""QuantGridTrainer: the one standardized LoRA recipe, top to bottom.

    from quantgrid.ml.trainer import QuantGridTrainer
    QuantGridTrainer().train(dataset_path="my_sec_data.json", output_dir="./my_sec_adapter",
                             num_epochs=3, batch_size=4)

``run_training`` reads in the order things happen:

1. resolve the settings (recipe + overrides) into one validated ``TrainConfig``;
2. check the output directory, the base model and the data *before* any heavy work,
   so a bad input costs seconds and leaves nothing behind;
3. load the base (4-bit NF4 on CUDA with bitsandbytes, i.e. QLoRA; fp32 on CPU) and
   attach the recipe's LoRA;
4. train: padding-free packed micro-batches, loss on completion tokens only, gradient
   accumulation, warmup + schedule, clipping, an eval every epoch (or every
   ``eval_steps``), optional early stopping and best-checkpoint selection, atomic
   checkpoints every ``save_steps`` steps and at each epoch end;
5. write the adapter's files in a temp sibling and move them into the output directory,
   manifest last, leaving every file training does not own in place (``ml/output.py``);
   delete the checkpoints.

Each run draws its own seed (LoRA A's initialisation, the eval split, the data order)
unless one is given, so independent contributors never start from the same matrices;
the seed used is in ``training/train_config.yaml`` and the manifest's recipe.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgrid import lora_files
from quantgrid.errors import ConfigError, DataError, OutOfMemoryError, QuantGridError
from quantgrid.ml.train_config import (  # noqa: F401 (re-exported: the trainer's public settings API)
    SETTINGS,
    RunSettings,
    TrainConfig,
    load_config_file,
    resolve_config,
)
from quantgrid.recipe import Recipe

# ---------------------------------------------------------------- data


@dataclass
class PreparedData:
    train: list  # list[Encoded]
    eval: list
    train_examples: list  # list[Example], for --include-dataset
    summary: dict[str, Any]
    fingerprint: dict[str, Any]


def prepare_data(cfg: TrainConfig, tokenizer) -> PreparedData:
    """Load, encode (prompt masked), filter and split. Raises DataError with a clear message."""
    from quantgrid.data import example_hash, fingerprint, load_examples_report
    from quantgrid.ml.tokenize import encode

    run, rec = cfg.run, cfg.recipe
    report = load_examples_report(run.dataset, format=run.data_format, lenient=run.lenient)
    examples = list(report.examples)
    if run.eval_dataset:
        held_out = load_examples_report(run.eval_dataset, format=run.data_format, lenient=run.lenient).examples
        # Leakage: an example in both sets would make the eval loss meaningless.
        eval_hashes = {example_hash(e) for e in held_out}
        n_before = len(examples)
        examples = [e for e in examples if example_hash(e) not in eval_hashes]
        if not examples:
            raise DataError(f"dataset empty after filtering: all {n_before} examples of {run.dataset} also appear in "
                            f"the eval dataset {run.eval_dataset}",
                            hint="pass held-out data to --eval-dataset that is not in the training set")
        eval_source = run.eval_dataset
    else:
        import random

        n_eval = round(len(examples) * rec.training.eval_fraction)
        if rec.training.eval_fraction > 0 and len(examples) >= 10:
            n_eval = max(1, n_eval)
        if n_eval >= len(examples):
            n_eval = 0
        order = list(range(len(examples)))
        random.Random(rec.training.seed).shuffle(order)
        held_out = [examples[i] for i in order[:n_eval]]
        examples = [examples[i] for i in sorted(order[n_eval:])]
        eval_source = f"{n_eval} examples split off the training data (eval_fraction {rec.training.eval_fraction})"

    max_len = rec.training.max_seq_length

    def enc(exs):
        return [encode(tokenizer, e, rec.prompt_template, max_len, rec.system_prompt) for e in exs]

    train_enc, eval_enc = enc(examples), enc(held_out)
    keep = [i for i, e in enumerate(train_enc) if e.n_completion_tokens > 0]
    n_too_long = len(train_enc) - len(keep)
    if not keep:
        full = [len(encode(tokenizer, e, rec.prompt_template, None, rec.system_prompt)) for e in examples[:200]]
        need = min(full) if full else max_len
        raise DataError(
            f"max_seq_length {max_len} is shorter than the prompts: none of the {len(train_enc)} examples has room "
            f"left for its answer (the shortest example is {need} tokens)",
            hint=f"raise --max-seq-length (at least {need}), or shorten the prompts/context")
    n_truncated = sum(1 for i in keep if len(train_enc[i]) == max_len)
    train_enc = [train_enc[i] for i in keep]
    train_examples = [examples[i] for i in keep]
    eval_enc = [e for e in eval_enc if e.n_completion_tokens > 0]
    fp = fingerprint(train_examples)
    summary = {
        "source": run.dataset, "format": report.format, "n_read": len(report.examples) + report.n_skipped,
        "n_skipped": report.n_skipped, "n_too_long": n_too_long, "n_truncated": n_truncated,
        "n_train": len(train_enc), "n_eval": len(eval_enc), "eval_source": eval_source,
        "train_tokens": sum(len(e) for e in train_enc),
        "train_loss_tokens": sum(e.n_completion_tokens for e in train_enc),
        "fingerprint_hash": fp.get("sha256", "")[:16],
    }
    return PreparedData(train_enc, eval_enc, train_examples, summary, fp)


# ---------------------------------------------------------------- model


def unsloth_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("unsloth") is not None


def load_model(cfg: TrainConfig, base_path: str, backend: str, device: str):
    """(PeftModel with a fresh trainable LoRA, tokenizer, description of how the base loaded)."""
    import torch

    from quantgrid.ml.batching import use_packed_attention
    from quantgrid.ml.models import attach_lora, load_base

    rec, run = cfg.recipe, cfg.run
    torch.manual_seed(rec.training.seed)  # LoRA A's init draws from it
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        four_bit = run.load_in_4bit if run.load_in_4bit is not None else True
        model, tok = FastLanguageModel.from_pretrained(
            model_name=base_path, max_seq_length=rec.training.max_seq_length, load_in_4bit=four_bit,
            dtype=None if run.dtype == "auto" else getattr(torch, run.dtype))
        model = FastLanguageModel.get_peft_model(
            model, r=rec.lora.r, lora_alpha=rec.lora.alpha, target_modules=list(rec.lora.target_modules),
            lora_dropout=rec.lora.dropout, bias=rec.lora.bias, use_gradient_checkpointing="unsloth",
            random_state=rec.training.seed)
        return model, tok, f"Unsloth ({'4-bit' if four_bit else 'bf16'})"
    four_bit = run.load_in_4bit
    if four_bit is None:
        four_bit = device.startswith("cuda")  # QLoRA on CUDA: load_base says what is missing, never falls back to bf16
    model, tok = load_base(base_path, revision=None if Path(base_path).exists() else rec.base_revision,
                           load_in_4bit=four_bit, dtype=None if run.dtype == "auto" else run.dtype, device=device)
    # Attention within each packed example only, without a T x T mask (see batching.py).
    use_packed_attention(model)
    if four_bit:
        # QLoRA: norms to fp32, inputs require grad, gradient checkpointing on.
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = attach_lora(model, rec)
    return model, tok, "4-bit NF4 (QLoRA)" if four_bit else f"{next(model.parameters()).dtype} on {device}"


def choose_backend(requested: str, device: str) -> str:
    if requested == "unsloth":
        if not unsloth_available():
            raise ConfigError("--backend unsloth: Unsloth is not installed",
                              hint="pip install unsloth (needs a CUDA GPU), or use --backend hf")
        if not device.startswith("cuda"):
            raise ConfigError("--backend unsloth needs a CUDA GPU", hint="use --backend hf on this machine")
        return "unsloth"
    if requested == "auto" and device.startswith("cuda") and unsloth_available():
        return "unsloth"
    return "hf"


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def oom_error(cfg: TrainConfig) -> OutOfMemoryError:
    t = cfg.recipe.training
    return OutOfMemoryError(
        f"out of memory while training (batch size {t.batch_size}, max_seq_length {t.max_seq_length})",
        hint=f"use a smaller batch: --batch-size {max(1, t.batch_size // 2)} --grad-accum {t.grad_accum * 2} keeps "
             f"the same effective batch; or a shorter --max-seq-length; or load the base in 4-bit on a CUDA GPU "
             f"(pip install 'quantgrid[cuda]')")


class TrainingInterrupted(QuantGridError):
    """Ctrl-C: a checkpoint was saved; ``hint`` says how to resume."""

    code = "interrupted"


# ---------------------------------------------------------------- the run


def files_written(cfg: TrainConfig) -> list[str]:
    """The paths (relative to the output) this run writes."""
    from quantgrid.ml.output import DATASET_COPY, TRAINING_FILES

    names = list(TRAINING_FILES)
    if cfg.run.include_dataset and not _dataset_is_the_copy(cfg):
        names.append(DATASET_COPY)
    return names


def _dataset_is_the_copy(cfg: TrainConfig) -> bool:
    """True when the training data already is ``<output>/training/dataset.jsonl`` (LocoLLM layout)."""
    from quantgrid.ml.output import DATASET_COPY

    copy, data = Path(cfg.run.output_dir) / DATASET_COPY, Path(cfg.run.dataset)
    return copy.exists() and data.exists() and os.path.samefile(copy, data)


def check_output_dir(cfg: TrainConfig):
    """Where the adapter goes and what that replaces (``output.OutputPlan``); refuses, before
    any heavy work, to replace a file training did not write or to mix two runs' checkpoints."""
    from quantgrid.ml.checkpoint import checkpoints_dir, list_checkpoints
    from quantgrid.ml.output import plan_output

    out = Path(cfg.run.output_dir)
    plan = plan_output(out, files_written(cfg), overwrite=cfg.run.overwrite)
    found = list_checkpoints(checkpoints_dir(out))
    if found and not cfg.run.resume and not cfg.run.overwrite:
        # A fresh run would mix its checkpoints with the old run's; never silently drop those.
        raise ConfigError(f"{checkpoints_dir(out)} holds checkpoints of an unfinished run (last: {found[-1].name})",
                          hint="pass --resume to continue that run, or --overwrite to start over")
    return plan


def run_training(cfg: TrainConfig, *, standard: Recipe | None = None, console=None,
                 on_step: Callable[[Any], None] | None = None, seed_drawn: bool = False) -> tuple[Path, dict[str, Any]]:
    """Train and write the adapter directory; returns (path, stats). See the module docstring.

    ``seed_drawn``: the recipe's seed was drawn for this run (the log says how to repeat it).
    """
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import get_scheduler

    from quantgrid.ml import checkpoint as ckpt
    from quantgrid.ml.batching import epoch_order, eval_batches, loss_sum, micro_batches
    from quantgrid.ml.models import base_info, default_device, load_tokenizer
    from quantgrid.ml.tracking import Trackers, default_run_name, parse_report_to
    from quantgrid.ml.training_log import Progress

    t_start = time.perf_counter()
    rec, run, t = cfg.recipe, cfg.run, cfg.recipe.training
    # -- 2. cheap checks first: output, base (config only), data
    plan = check_output_dir(cfg)
    trackers_wanted = parse_report_to(run.report_to)
    requested = run.base_model_path or rec.base_model
    base_path = _local_base(requested)
    info = base_info(base_path)
    if base_path != requested:  # a Hub id found in the local cache: the id, not the cache path, is its name
        info = dataclasses.replace(info, name=_hub_id(requested))
    data = prepare_data(cfg, load_tokenizer(base_path))
    data.summary["seed_drawn"] = seed_drawn
    if (run.load_best_model_at_end or run.eval_steps) and not data.eval:
        flag = "--load-best-model-at-end" if run.load_best_model_at_end else "--eval-steps"
        raise ConfigError(f"{flag} needs held-out data, and this run has none "
                          f"({data.summary['eval_source']})",
                          hint="pass --eval-dataset FILE, or raise eval_fraction so that some examples are held out")
    device = run.device or default_device()
    from quantgrid.ml import distributed as dist

    dp, main = dist.launched(), dist.is_main()  # data-parallel under torchrun (ml/distributed.py)
    if dp:
        device = dist.init(run.device)
    backend = choose_backend(run.backend, device)
    standard = standard or Recipe()
    non_standard = rec.standard_fields_differ(standard)
    identity = {"recipe_hash": rec.hash(), "dataset": data.fingerprint.get("sha256"), "base": info.fingerprint,
                "eval": [len(data.eval), sum(len(e) for e in data.eval)]}

    # -- 3. model, optimizer, schedule
    model, _tok, load_desc = load_model(cfg, base_path, backend, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    batches_per_epoch = math.ceil(len(data.train) / t.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / t.grad_accum)
    total_steps = math.ceil(steps_per_epoch * t.epochs)
    if run.max_steps:
        total_steps = min(total_steps, run.max_steps)
    scheduler = get_scheduler(t.schedule, optimizer, num_warmup_steps=math.ceil(t.warmup_ratio * total_steps)
                              if run.warmup_steps is None else run.warmup_steps,
                              num_training_steps=total_steps)
    ckpt_root = ckpt.checkpoints_dir(run.output_dir)
    state = ckpt.TrainState(identity=identity, seed=t.seed)
    best_weights: dict | None = None  # adapter weights of the best eval so far (load_best_model_at_end)
    if not run.resume and main:  # only --overwrite gets here with old checkpoints (check_output_dir)
        shutil.rmtree(ckpt_root, ignore_errors=True)
    if run.resume:
        last = ckpt.latest_checkpoint(run.output_dir, identity)
        state = ckpt.load_checkpoint(last, model, optimizer, scheduler)
        best_weights = ckpt.load_best(last)
    progress = Progress(total_steps, start_step=state.step, mode=run.progress if main else "none",
                        log_every=run.log_every, console=console)
    if dp:
        progress.note(f"data-parallel: {dist.world_size()} processes share each step's micro-batches")
    trackers = None if not main else Trackers(trackers_wanted, logging_dir=run.logging_dir or Path(run.output_dir) / "training" / "runs",
                        run_name=run.run_name or default_run_name(run.output_dir),
                        config=cfg.model_dump(mode="json")) if trackers_wanted else None
    slice_logits = backend == "hf"

    def evaluate() -> float | None:
        if not data.eval:
            return None
        model.eval()
        total = count = 0.0
        with torch.no_grad():
            for b in eval_batches(data.eval, t.batch_size):
                total += loss_sum(model, b.to(device), slice_logits=slice_logits).item()
                count += b.n_loss_tokens
        return total / max(count, 1)

    def record_eval() -> None:
        nonlocal best_weights
        loss = evaluate()
        if loss is None:
            return
        state.evals.append({"step": state.step, "epoch": state.epoch, "eval_loss": loss})
        if state.best_eval is None or loss < state.best_eval - 1e-4:
            state.best_eval, state.bad_evals = loss, 0
        else:
            state.bad_evals += 1
        if run.load_best_model_at_end and state.step > 0 and (
                state.best_step is None or loss < _eval_at(state, state.best_step)):
            # Step 0 is the base itself (the LoRA update starts at zero): never a candidate.
            state.best_step = state.step
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}
        if trackers is not None:
            trackers.log({"eval/loss": loss}, state.step)
        progress.note(f"eval loss {loss:.4f} at step {state.step} (epoch {state.epoch})")

    def save() -> None:
        if not main:
            return
        ckpt.save_checkpoint(ckpt_root, model, optimizer, scheduler, state,
                             best=best_weights if run.load_best_model_at_end else None)

    progress.note(f"training {data.summary['n_train']} examples ({data.summary['train_tokens']:,} tokens), "
                  f"{total_steps} steps, base {info.name} as {load_desc}"
                  + (f", resumed at step {state.step}" if run.resume else "")
                  + (f"; in {run.output_dir}, training replaces {len(plan.replaces)} file(s) of its own and "
                     f"keeps {len(plan.keeps)} other file(s)" if plan.exists else ""))
    if plan.exists and (Path(run.output_dir) / "eval" / "results.json").is_file():
        progress.note(f"note: {run.output_dir}/eval/ is kept, but its results are for the previous adapter: "
                      "run `quantgrid eval` again after training", always=True)
    if non_standard:
        progress.note(f"note: non-standard recipe ({', '.join(non_standard)}): fine for local work; "
                      "the manifest marks this adapter non-standard", always=True)
    # -- 4. train
    stopped = "reached the planned steps"
    try:
        if not state.evals:
            record_eval()  # at step 0 the LoRA update is zero: this is the base model's loss
        while state.step < total_steps:
            order = epoch_order(len(data.train), t.seed, state.epoch)
            window: list = []
            tick, cpu_tick = time.perf_counter(), time.process_time()  # includes packing, as a data loader's would
            batches = micro_batches(data.train, order, t.batch_size, start=state.position)
            for i, batch in batches:
                window.append(batch)
                if len(window) < t.grad_accum and i < batches_per_epoch - 1:
                    continue
                # One optimizer step over `window`: dividing every micro-batch's summed
                # loss by the window's completion tokens gives the token-mean loss.
                model.train()
                n_loss = sum(b.n_loss_tokens for b in window)
                step_loss = 0.0
                for j, b in enumerate(window):
                    if dp and j % dist.world_size() != dist.rank():
                        continue  # another process's share of this step
                    loss = loss_sum(model, b.to(device), slice_logits=slice_logits) / max(n_loss, 1)
                    loss.backward()
                    step_loss += loss.item()
                if dp:
                    dist.sum_gradients(params)
                    step_loss = dist.sum_scalar(step_loss, device)
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
                lr = scheduler.get_last_lr()[0]  # the rate this step uses
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                n_tok = sum(b.n_tokens for b in window)
                window = []
                state.train_seconds += time.perf_counter() - tick
                state.train_cpu_seconds += time.process_time() - cpu_tick
                state.step += 1
                state.position = i + 1
                state.tokens_seen += n_tok
                state.loss_tokens_seen += n_loss
                state.history.append({"step": state.step, "loss": step_loss, "lr": lr, "tokens": state.tokens_seen})
                recent = [h["loss"] for h in state.history[-run.log_every:]]
                tps = state.tokens_seen / state.train_seconds
                progress.update(state.step, sum(recent) / len(recent), tps, lr)
                if trackers is not None:
                    trackers.log({"train/loss": step_loss, "train/learning_rate": lr, "train/tokens_per_second": tps,
                                  "train/epoch": state.epoch + state.position / batches_per_epoch}, state.step)
                if on_step is not None:
                    on_step(state)
                if state.step >= total_steps:
                    break
                if run.eval_steps and state.step % run.eval_steps == 0:
                    record_eval()
                    if t.early_stopping_patience and state.bad_evals >= t.early_stopping_patience:
                        stopped = f"early stopping: eval loss did not improve for {state.bad_evals} evaluations"
                        break
                if run.save_strategy == "steps" and state.step % run.save_steps == 0:
                    save()
                tick, cpu_tick = time.perf_counter(), time.process_time()
            else:  # the epoch ran to its end
                state.epoch, state.position = state.epoch + 1, 0
                if not run.eval_steps:
                    record_eval()
                save()
                if t.early_stopping_patience and state.bad_evals >= t.early_stopping_patience:
                    stopped = f"early stopping: eval loss did not improve for {state.bad_evals} epochs"
                    break
                continue
            break  # left the epoch early: the planned steps or early stopping
        if not state.evals or state.evals[-1]["step"] != state.step:
            record_eval()
    except KeyboardInterrupt:
        progress.close()
        path = ckpt.save_checkpoint(ckpt_root, model, optimizer, scheduler, state,
                                    best=best_weights if run.load_best_model_at_end else None) if state.step else None
        where = f"a checkpoint at step {state.step} is in {path}" if path else "no step had finished, nothing saved"
        raise TrainingInterrupted(f"training interrupted; {where}",
                                  hint="run the same command again with --resume to continue" if path else
                                  "run the same command again to start over") from None
    except Exception as e:
        if _is_oom(e):
            raise oom_error(cfg) from None
        raise
    finally:
        progress.close()
        if trackers is not None:
            trackers.close()

    kept = None
    if run.load_best_model_at_end and state.best_step is not None and best_weights is not None:
        kept = {"step": state.best_step, "eval_loss": _eval_at(state, state.best_step)}
        if state.best_step != state.step:
            set_peft_model_state_dict(model, {k: v.to(device) for k, v in best_weights.items()})
        progress.note(f"kept the weights of step {state.best_step} (held-out loss {kept['eval_loss']:.4f}, the "
                      f"lowest); the last step was {state.step}")
    # -- 5. the adapter's files, complete or not at all
    out = Path(run.output_dir)
    if main:
        out = write_adapter(cfg, model, data, state, info, standard, stopped, load_desc, device,
                            time.perf_counter() - t_start, plan, kept=kept)
        if not run.keep_checkpoints:
            shutil.rmtree(ckpt_root, ignore_errors=True)
    if dp:
        dist.barrier()  # every process returns once the adapter is in place
    stats = {"steps": state.step, "tokens": state.tokens_seen, "loss_tokens": state.loss_tokens_seen,
             "train_seconds": state.train_seconds, "train_cpu_seconds": state.train_cpu_seconds, "tokens_per_s": state.tokens_seen / max(state.train_seconds, 1e-9),
             "final_train_loss": state.history[-1]["loss"] if state.history else None,
             "train_losses": [h["loss"] for h in state.history], "lrs": [h["lr"] for h in state.history],
             "eval_losses": [e["eval_loss"] for e in state.evals], "eval_steps": [e["step"] for e in state.evals],
             "kept_step": kept["step"] if kept else state.step, "seed": t.seed,
             "non_standard": non_standard, "stopped": stopped}
    return out, stats


def _eval_at(state, step: int) -> float:
    return next(e["eval_loss"] for e in reversed(state.evals) if e["step"] == step)


def write_adapter(cfg: TrainConfig, model, data: PreparedData, state, info, standard: Recipe, stopped: str,
                  load_desc: str, device: str, seconds: float, plan, kept: dict[str, Any] | None = None) -> Path:
    """Build the adapter's files in a temp sibling, then install them (``ml/output.py``)."""
    from quantgrid.adapter import CONFIG, MANIFEST, write_manifest
    from quantgrid.card import write_adapter_card
    from quantgrid.data import write_records
    from quantgrid.data.chat_template import save_chat_template
    from quantgrid.data.profile import question_profile
    from quantgrid.ml.models import load_tokenizer
    from quantgrid.ml.output import DATASET_COPY, TRAINING_LOG, install, owned_by_training, staging
    from quantgrid.ml.training_log import hardware_summary, merge_log, plot_losses, training_log_md

    rec, run = cfg.recipe, cfg.run
    non_standard = rec.standard_fields_differ(standard)
    out = Path(run.output_dir)
    with staging(out) as tmp:
        model.save_pretrained(str(tmp))  # PEFT: adapter_config.json + adapter_model.safetensors (+ its README)
        # The config records the base's id, never this machine's path to it (that leaks
        # the user's directory layout and means nothing elsewhere). The recipe's name comes
        # first; a recipe that names a local path falls back to the loaded base's name (a
        # Hub id found in the cache, or a quantgrid base's recorded name), else None.
        conf = lora_files.read_config(tmp)
        conf["base_model_name_or_path"] = lora_files.base_id(rec.base_model) or lora_files.base_id(info.name)
        (tmp / CONFIG).write_text(json.dumps(conf, indent=2, sort_keys=True))
        # The recipe's prompt as the tokenizer's chat template: every client prompts like training.
        save_chat_template(tmp, load_tokenizer(_local_base(run.base_model_path or rec.base_model)), rec.prompt_template,
                           rec.system_prompt)
        training = tmp / "training"
        training.mkdir()
        (training / "train_config.yaml").write_text(cfg.to_yaml())
        base = {"name": info.name, "fingerprint": info.fingerprint, "load": load_desc}
        section = training_log_md(
            config=cfg.model_dump(mode="json"), data=data.summary, state=state, stopped=stopped,
            hardware=hardware_summary(device), base=base, seconds=seconds, non_standard=non_standard, kept=kept)
        old_log = out / TRAINING_LOG
        (tmp / TRAINING_LOG).write_text(merge_log(
            old_log.read_text(encoding="utf-8") if old_log.is_file() else None, section,
            ours=TRAINING_LOG in owned_by_training(out)))
        plot_losses(state, training / "loss.png")
        if DATASET_COPY in files_written(cfg):
            write_records(tmp / DATASET_COPY, data.train_examples)

        def manifest() -> None:  # hashes every file written above
            write_manifest(tmp, recipe=rec, base_name=info.name, base_fingerprint=info.fingerprint,
                           standard=standard, author=run.author, dataset_description=run.dataset_description,
                           dataset_fingerprint=data.fingerprint,
                           routing=question_profile(e.prompt for e in data.train_examples)
                           if run.routing_profile else None)

        # The card replaces PEFT's empty template; it is built from the manifest, and the
        # manifest is then rewritten so that it hashes the card too. Manifest last.
        manifest()
        write_adapter_card(tmp, name=out.resolve().name, license=run.license)  # no eval yet: "not evaluated"
        (tmp / MANIFEST).unlink()
        manifest()
        install(tmp, plan)
    return out


# ---------------------------------------------------------------- the public API


class QuantGridTrainer:
    """Train a LoRA adapter with the standardized recipe.

    ``base_model`` defaults to ``recipe.base_model``; ``recipe`` defaults to the built-in
    standard recipe (``quantgrid recipe show``), or pass the hub's. ``standard`` is the
    recipe changes are compared against to mark an adapter non-standard (default: ``recipe``).
    """

    def __init__(self, base_model: str | None = None, recipe: Recipe | None = None, *,
                 standard: Recipe | None = None, console=None, **defaults: Any):
        self.recipe = recipe or Recipe()
        self.base_model = base_model
        self.standard = standard or self.recipe
        self.console = console
        self.defaults = defaults
        self.last_stats: dict[str, Any] | None = None
        self.seed_drawn = False

    def config(self, dataset_path: str | Path | None = None, output_dir: str | Path | None = None,
               num_epochs: float | None = None, batch_size: int | None = None, **overrides: Any) -> TrainConfig:
        base_model = overrides.pop("base_model", None) or self.base_model
        recipe = self.recipe
        if base_model:
            recipe = _recipe_for_base(recipe, base_model)
        flat = {**self.defaults, **overrides}
        for name, value in (("dataset", dataset_path), ("output_dir", output_dir), ("epochs", num_epochs),
                            ("batch_size", batch_size)):
            if value is not None:
                flat[name] = str(value) if isinstance(value, Path) else value
        self.seed_drawn = False
        if flat.get("seed") is None:
            flat["seed"] = self._run_seed(flat)
        return resolve_config(recipe, flat, base_model=base_model)

    def _run_seed(self, flat: dict[str, Any]) -> int:
        """The seed when none was asked for: the unfinished run's on --resume, else a fresh one.

        A recipe's seed is shared by everyone who trains with it, so it is not used: with
        one seed for all, every contributor's LoRA A would start from the same matrix.
        """
        from quantgrid.ml.checkpoint import checkpoint_seed

        if flat.get("resume") and flat.get("output_dir"):
            seed = checkpoint_seed(flat["output_dir"])
            if seed is not None:
                return seed
        self.seed_drawn = True
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        from quantgrid.ml import distributed as dist

        if dist.launched():  # every process must start from the same LoRA initialisation
            dist.init(flat.get("device"))
            seed = dist.broadcast(seed)
        return seed

    def train(self, dataset_path: str | Path | None = None, output_dir: str | Path | None = None,
              num_epochs: float | None = None, batch_size: int | None = None, *,
              on_step: Callable[[Any], None] | None = None, **overrides: Any) -> Path:
        """Train and write the adapter directory; returns its path.

        ``num_epochs`` and ``batch_size`` default to the recipe's (3 and 4). Any other
        setting can be overridden by name: ``lr``, ``grad_accum``, ``max_steps``,
        ``max_seq_length``, ``lora_rank``, ``eval_dataset``, ``resume``, ``overwrite``,
        ``include_dataset``, ``backend``... (``SETTINGS`` lists them all).
        """
        from rich.console import Console

        cfg = self.config(dataset_path, output_dir, num_epochs, batch_size, **overrides)
        out, self.last_stats = run_training(cfg, standard=self.standard, console=self.console, on_step=on_step,
                                            seed_drawn=self.seed_drawn)
        from quantgrid.ml.distributed import is_main

        if is_main():
            (self.console or Console()).print(f"Adapter saved to {out}", highlight=False, soft_wrap=True)
        return out


def _local_base(ref: str) -> str:
    """A base given as ``hf://OWNER/NAME`` or a cached Hub id -> its snapshot in the local
    Hugging Face cache (offline); a local path as it is."""
    from quantgrid.hf_cache import resolve_local

    return resolve_local(ref)


def _hub_id(ref: str) -> str:
    from quantgrid.hf_cache import hub_name

    return hub_name(ref) or ref


def _recipe_for_base(recipe: Recipe, base_model: str) -> Recipe:
    """The recipe names the base by its stable name: a tiny base's quantgrid name, or the
    id the user gave. So the same base at different paths gives the same recipe hash."""
    from quantgrid.ml.models import base_info

    local = _local_base(base_model)
    name = _hub_id(base_model) if local != base_model else base_info(local).name
    if name == recipe.base_model:
        return recipe
    return recipe.model_copy(update={"base_model": name})

