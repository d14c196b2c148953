"""Helpers for the evaluation tests (a module of its own: every test directory has a
``conftest`` and a bare ``import conftest`` could pick up another one)."""

from __future__ import annotations

import json
from pathlib import Path


def train_adapter(base_path: str, out_dir: Path, examples, *, steps: int = 15, lr: float = 1e-2, seed: int = 0,
                  recipe=None) -> Path:
    """Train a LoRA on ``examples`` for ``steps`` optimizer steps and write a full adapter
    directory: PEFT files, training/TRAINING_LOG.md (loss table) and quantgrid.json."""
    return _train(base_path, out_dir, examples, steps=steps, lr=lr, seed=seed, recipe=recipe)


def _train(base_path, out_dir, examples, *, steps, lr, seed, recipe):
    import torch

    from quantgrid.adapter import write_manifest
    from quantgrid.data import fingerprint
    from quantgrid.ml.models import attach_lora, base_info, load_base
    from quantgrid.ml.tokenize import IGNORE_INDEX, encode
    from quantgrid.recipe import Recipe

    info = base_info(base_path)
    recipe = recipe or Recipe(base_model=info.name)
    torch.manual_seed(seed)
    model, tok = load_base(base_path, device="cpu")
    model = attach_lora(model, recipe)
    model.train()
    enc = [encode(tok, ex, recipe.prompt_template, 256, recipe.system_prompt) for ex in examples]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rows, batch = [], 8
    for step in range(steps):
        chunk = [enc[(step * batch + j) % len(enc)] for j in range(batch)]
        width = max(len(e) for e in chunk)
        ids = torch.tensor([e.input_ids + [tok.pad_token_id] * (width - len(e)) for e in chunk])
        labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e)) for e in chunk])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        rows.append((step + 1, loss.item()))
    model.eval()
    model.save_pretrained(str(out_dir))
    training = out_dir / "training"
    training.mkdir(exist_ok=True)
    table = ["| step | train loss | eval loss | learning rate |", "|---:|---:|---:|---:|"]
    table += [f"| {s} | {v:.4f} |  | {lr:.2e} |" for s, v in rows]
    (training / "TRAINING_LOG.md").write_text("# Training log\n\n## Loss\n\n" + "\n".join(table) + "\n")
    (training / "train_config.yaml").write_text(f"recipe: {json.dumps(recipe.model_dump(mode='json'))}\n"
                                                f"run: {{base_model_path: {json.dumps(str(base_path))}}}\n")
    write_manifest(out_dir, recipe=recipe, base_name=info.name, base_fingerprint=info.fingerprint,
                   dataset_fingerprint=fingerprint(examples), author="tester")
    return out_dir


def write_jsonl(path: Path, examples) -> Path:
    path.write_text("".join(json.dumps(ex.to_dict()) + "\n" for ex in examples))
    return path
