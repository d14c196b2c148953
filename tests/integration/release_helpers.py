"""Real adapters for release tests: a few optimizer steps of PEFT LoRA on the tiny base.

The tiny base is random-init, so a few dozen steps on finance Q&A lower its finance loss
clearly: a genuinely helpful adapter, made in about a second. ``accept`` puts one in a hub's
database and blob store as validation would leave it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from quantgrid.data.finance import general_ood, generate
from quantgrid.hub.server.auth import add_user
from quantgrid.hub.server.models import Adapter, Blob, Submission, User
from quantgrid.recipe import Recipe


def release_recipe(base: str) -> Recipe:
    return Recipe.from_dict({"base_model": base, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                             "training": {"max_seq_length": 256}})


def hidden(n: int = 24, seed: int = 11):
    """(benchmark, ood) small enough for fast tests."""
    return generate(n, seed), general_ood(12, seed=seed)


def train_adapters(base: str, recipe: Recipe, root: Path, specs: dict[str, tuple[int, float]], *,
                   steps: int = 12, lr: float = 1e-2, n_examples: int = 32) -> dict[str, Path]:
    """Train one LoRA adapter per ``name: (seed, scale)`` on finance items drawn from ``seed``;
    save each with PEFT under ``root / name``. The base is loaded once.

    ``scale`` multiplies lora_B after training: scale=-25 gives a harmful adapter.
    """
    import math

    from quantgrid.ml.models import attach_lora, load_base
    from quantgrid.ml.tokenize import IGNORE_INDEX, encode

    model, tok = load_base(base, device="cpu")
    model = attach_lora(model, recipe)
    lora = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    out = {}
    for name, (seed, scale) in specs.items():
        torch.manual_seed(seed)
        with torch.no_grad():  # a fresh LoRA, as PEFT initializes it: A kaiming-uniform, B zero
            for n, p in lora:
                torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5)) if "lora_A" in n else p.zero_()
        enc = [encode(tok, ex, recipe.prompt_template, 96, recipe.system_prompt) for ex in generate(n_examples, seed)]
        width = max(len(e) for e in enc)
        ids = torch.tensor([e.input_ids + [tok.pad_token_id] * (width - len(e)) for e in enc])
        labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e)) for e in enc])
        opt = torch.optim.AdamW([p for _, p in lora], lr=lr)
        model.train()
        for _ in range(steps):
            opt.zero_grad()
            model(input_ids=ids, labels=labels).loss.backward()
            opt.step()
        if scale != 1.0:
            with torch.no_grad():
                for n, p in lora:
                    if "lora_B" in n:
                        p.mul_(scale)
        model.save_pretrained(str(root / name))
        out[name] = root / name
    return out


def submission_zips(dirs: dict[str, Path]) -> dict[str, bytes]:
    """Each trained adapter as the minimal submission zip (its PEFT config and weights)."""
    zips = {}
    for name, d in dirs.items():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                zf.write(d / f, f)
        zips[name] = buf.getvalue()
    return zips


def accept(hub, user: str, data: bytes) -> int:
    """Put an accepted adapter in the hub the way validation leaves it: blob, submission, adapter row."""
    db, blobs = hub["db"], hub["app"].state.blobs
    with db.read() as s:
        uid = s.query(User.id).filter(User.name == user).scalar()
    if uid is None:
        add_user(db, user)
        with db.read() as s:
            uid = s.query(User.id).filter(User.name == user).scalar()
    sha = blobs.put_bytes(data)
    with db.write() as s:
        if s.get(Blob, sha) is None:
            s.add(Blob(sha256=sha, size_bytes=len(data)))
        sub = Submission(user_id=uid, blob_sha256=sha, filename="x.zip", size_bytes=len(data), status="accepted")
        s.add(sub)
        s.flush()
        s.add(Adapter(id=sub.id, user_id=uid, blob_sha256=sha, score=0.1))
        return sub.id
