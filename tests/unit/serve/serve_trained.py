"""Adapters trained by the trainer on the tiny base, shared by the serving tests.

Distinct finance topics (for routing) and, among them, every prompt template of the
registry (for the served prompt). A few steps each: the prompt files and the routing
profile are what the tests need, not a good model.
"""

from __future__ import annotations

from pathlib import Path

# (name = finance topic, prompt template)
TRAINED_SPECS = [("fixed_income", "qa"), ("options", "context_qa"), ("valuation", "alpaca"),
                 ("risk", "mistral"), ("trading", "chat")]
TRAIN_SEED = 7  # generate(seed=TRAIN_SEED + i): the training questions of adapter i
HELD_OUT_SEED = 1007  # other seeds: questions no adapter saw
N_TRAIN = 60


def train_all(base: str, root: Path) -> dict[str, Path]:
    from rich.console import Console

    from quantgrid.data import write_records
    from quantgrid.data.finance import generate
    from quantgrid.ml.trainer import QuantGridTrainer
    from quantgrid.recipe import Recipe

    out = {}
    for i, (topic, template) in enumerate(TRAINED_SPECS):
        data = root / f"{topic}.jsonl"
        write_records(data, generate(N_TRAIN, seed=TRAIN_SEED + i, topics=[topic]))
        trainer = QuantGridTrainer(base_model=base, recipe=Recipe(prompt_template=template),
                                   console=Console(quiet=True))
        out[topic] = trainer.train(dataset_path=data, output_dir=root / topic, batch_size=8, grad_accum=1,
                                   max_steps=4, lr=3e-3, seed=i)
    return out
