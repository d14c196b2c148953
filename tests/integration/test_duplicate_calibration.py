"""Calibration of the near-duplicate test: honest independent work passes, every kind of copy is caught.

Honest adapters are trained independently on the tiny test base: different topics, data
files in different formats, different data sizes and a seed each (as every training run
draws its own). Copies are made the ways a copier would: the same weights re-zipped by
another user, lora_B scaled by 1.01, the copy plus 1% noise, and the copy trained 10 more
steps on the copier's own data. Releases are copied too: pushed back as they are, and cut
to the recipe's rank (a projection).

The test prints the table docs/validation.md shows and checks that the hub's default
thresholds (``ValidationConfig``) separate the two groups with a margin on both sides.
The default run trains 8 honest adapters (seconds); ``-m slow`` runs the full table with
12, longer training and more copy kinds.
"""

from __future__ import annotations

import io
import itertools
import math
import zipfile
from pathlib import Path

import pytest
import torch

from quantgrid.data.finance import TOPICS, concepts, generate
from quantgrid.hub.validate import ValidationConfig
from quantgrid.lora_files import module_name
from quantgrid.merge.methods import LoraFactors, delta_cosine, merge, projected_cosine
from quantgrid.recipe import Recipe

FORMATS = ("qa", "messages", "alpaca", "text", "instruction_output")
MARGIN = 0.1  # required distance of every pair from the threshold, on its side


class Trainer:
    """Plain PEFT LoRA training on the tiny base: a fresh LoRA per run from that run's seed."""

    def __init__(self, base: str, tmp: Path):
        from quantgrid.ml.models import attach_lora, load_base

        self.recipe = Recipe.from_dict({"base_model": base, "training": {"max_seq_length": 256}})
        model, self.tok = load_base(base, device="cpu")
        self.model = attach_lora(model, self.recipe)
        self.lora = [(n, p) for n, p in self.model.named_parameters() if "lora_" in n]
        self.tmp = tmp

    def factors(self) -> dict[str, LoraFactors]:
        sd = {n: p.detach().clone() for n, p in self.lora}
        # Keyed by the base's module names, as the hub reads a submission (lora_files).
        return {module_name(n.split(".lora_A")[0]): LoraFactors(sd[n], sd[n.replace("lora_A", "lora_B")], self.recipe.lora.scaling)
                for n in sd if "lora_A" in n}

    def start(self, seed: int | None = None, factors: dict[str, LoraFactors] | None = None) -> None:
        with torch.no_grad():
            if factors is None:  # PEFT's own initialisation: A kaiming-uniform from the seed, B zero
                torch.manual_seed(seed)
                for n, p in self.lora:
                    torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5)) if "lora_A" in n else p.zero_()
            else:
                for n, p in self.lora:
                    f = factors[module_name(n.split(".lora_")[0])]
                    p.copy_(f.A if "lora_A" in n else f.B)

    def data(self, examples, fmt: str, name: str):
        """Write the examples in ``fmt`` and read them back the way `quantgrid train` does."""
        from quantgrid.data import load_examples
        from quantgrid.data.formats import write_records

        return load_examples(write_records(self.tmp / f"{name}.{fmt}.jsonl", examples, fmt))

    def train(self, examples, steps: int, seed: int, lr: float = 2e-3, batch: int = 16) -> dict[str, LoraFactors]:
        from quantgrid.ml.tokenize import IGNORE_INDEX, encode

        enc = [encode(self.tok, ex, self.recipe.prompt_template, 128, self.recipe.system_prompt) for ex in examples]
        opt = torch.optim.AdamW([p for _, p in self.lora], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        self.model.train()
        for _ in range(steps):
            rows = [enc[i] for i in torch.randint(0, len(enc), (batch,), generator=gen).tolist()]
            width = max(len(e) for e in rows)
            ids = torch.tensor([e.input_ids + [self.tok.pad_token_id] * (width - len(e)) for e in rows])
            labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e)) for e in rows])
            opt.zero_grad()
            self.model(input_ids=ids, labels=labels).loss.backward()
            opt.step()
        return self.factors()


def rezipped(trainer: Trainer, factors: dict[str, LoraFactors], tmp: Path) -> dict[str, LoraFactors]:
    """The same weights saved by PEFT, zipped by another user (other order, other compression), read back."""
    from quantgrid.merge.release import read_factors_zip

    trainer.start(factors=factors)
    out = tmp / "rezip"
    trainer.model.save_pretrained(str(out))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in ("adapter_model.safetensors", "adapter_config.json"):
            zf.write(out / f, f)
    return read_factors_zip(buf.getvalue())


def build_table(base: str, tmp: Path, *, n_honest: int, steps: int, long_steps: int | None) -> dict:
    t = Trainer(base, tmp)
    honest: dict[str, dict] = {}
    for i in range(n_honest):
        fmt = FORMATS[i % len(FORMATS)]
        seed = 1000 + 17 * i
        if i < len(TOPICS) and i < n_honest - 2:  # one topic each
            topic, examples = TOPICS[i], generate(48 + 16 * (i % 3), seed, [TOPICS[i]])
        elif i == n_honest - 1:  # hand-written concept Q&A plus computed items
            topic, examples = "concepts+all", concepts() + generate(32, seed)
        else:  # every topic, own draw
            topic, examples = "all", generate(96, seed)
        t.start(seed)
        n_steps = long_steps if (long_steps and i == 0) else steps
        honest[f"h{i} {topic} ({fmt}, seed {seed}, {n_steps} steps)"] = t.train(t.data(examples, fmt, f"h{i}"),
                                                                               n_steps, seed)
    names = list(honest)
    src = honest[names[1]]
    gen = torch.Generator().manual_seed(7)
    copies = {
        "re-zipped by another user": rezipped(t, src, tmp),
        "lora_B x 1.01": {m: LoraFactors(f.A, f.B * 1.01, f.scaling) for m, f in src.items()},
        "copy + 1% noise": {m: LoraFactors(f.A + 0.01 * f.A.std() * torch.randn(f.A.shape, generator=gen),
                                           f.B + 0.01 * f.B.std() * torch.randn(f.B.shape, generator=gen), f.scaling)
                            for m, f in src.items()},
    }
    t.start(factors=src)
    copies["copy + 10 steps on the copier's data"] = t.train(t.data(generate(64, 4242, [TOPICS[-1]]), "qa", "cp"),
                                                             10, 4242)
    if long_steps:
        gen2 = torch.Generator().manual_seed(8)
        copies["copy + 3% noise"] = {m: LoraFactors(f.A + 0.03 * f.A.std() * torch.randn(f.A.shape, generator=gen2),
                                                    f.B + 0.03 * f.B.std() * torch.randn(f.B.shape, generator=gen2),
                                                    f.scaling) for m, f in src.items()}
        copies["lora_A x 2, lora_B x 0.5"] = {m: LoraFactors(f.A * 2, f.B * 0.5, f.scaling) for m, f in src.items()}
    pairs = [("honest", f"{a} / {b}", delta_cosine(honest[a], honest[b])) for a, b in itertools.combinations(names, 2)]
    pairs += [("copy", f"{k} / {names[1]}", delta_cosine(f, src)) for k, f in copies.items()]

    # Releases: everyone but h0 merged (exact, equal weights); h0 is new honest work against it.
    others = [honest[n] for n in names[1:]]
    release = merge(others, method="svd", rank=sum(f.rank for f in (next(iter(o.values())) for o in others))).factors
    projection = merge([release], [1.0], method="svd", rank=t.recipe.lora.r).factors
    release_rows = [
        ("honest", f"{names[0]} / release of the others", delta_cosine(honest[names[0]], release),
         projected_cosine(honest[names[0]], release)),
        ("copy", "the release pushed back", delta_cosine(release, release), projected_cosine(release, release)),
        ("copy", f"the release cut to rank {t.recipe.lora.r}", delta_cosine(projection, release),
         projected_cosine(projection, release)),
    ]
    return {"pairs": pairs, "releases": release_rows}


def check_and_print(table: dict) -> None:
    cfg = ValidationConfig()
    thr, proj_thr = cfg.duplicate_cosine, cfg.release_projection_cosine
    honest = [c for kind, _, c in table["pairs"] if kind == "honest"]
    copies = [c for kind, _, c in table["pairs"] if kind == "copy"]
    print(f"\nnear-duplicate threshold: delta-W cosine >= {thr}")
    print("| kind | pair | delta-W cosine | verdict |\n|---|---|---|---|")
    for kind, label, c in sorted(table["pairs"], key=lambda r: (r[0] != "copy", -r[2])):
        print(f"| {kind} | {label} | {c:.4f} | {'near-duplicate' if c >= thr else 'independent'} |")
    print(f"\nhonest pairs: {len(honest)}, max cosine {max(honest):.4f} (margin below the threshold "
          f"{thr - max(honest):.4f}); copies: {len(copies)}, min cosine {min(copies):.4f} (margin above "
          f"{min(copies) - thr:.4f})")
    print(f"\nreleases: delta-W cosine >= {thr} or projected cosine >= {proj_thr}")
    print("| kind | candidate / release | delta-W cosine | projected cosine |\n|---|---|---|---|")
    for kind, label, c, p in table["releases"]:
        print(f"| {kind} | {label} | {c:.4f} | {p:.4f} |")
    assert max(honest) <= thr - MARGIN, "an honest pair is too close to the near-duplicate threshold"
    assert min(copies) >= thr + MARGIN, "a copy is too close to the near-duplicate threshold"
    for kind, label, c, p in table["releases"]:
        caught = c >= thr or p >= proj_thr
        assert caught == (kind == "copy"), (label, c, p)
        if kind == "honest":
            assert c <= thr - MARGIN and p <= proj_thr - 0.05, (label, c, p)


@pytest.fixture(scope="session")
def small_table(tiny_base, tmp_path_factory):
    torch.manual_seed(0)
    return build_table(tiny_base, tmp_path_factory.mktemp("calibration"), n_honest=8, steps=30, long_steps=None)


def test_calibration_table_separates_honest_work_from_copies(small_table):
    assert sum(1 for k, _, _ in small_table["pairs"] if k == "honest") == 28  # 8 adapters, every pair
    check_and_print(small_table)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_calibration_table(tiny_base, tmp_path):
    table = build_table(tiny_base, tmp_path, n_honest=12, steps=60, long_steps=200)
    assert sum(1 for k, _, _ in table["pairs"] if k == "honest") == 66
    check_and_print(table)
