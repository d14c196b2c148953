"""'auto' routing accuracy with adapters trained by QuantGridTrainer on distinct topics.

Builds the tiny test base, trains one adapter per finance topic (a few steps: routing uses
what training records, not how well it trained), then routes three question sets with
each method of ``quantgrid.serve.router``:

* held-out: questions of each adapter's topic drawn with other seeds (no adapter saw them);
* concepts: the hand-written concept questions of the same topics (another style of question);
* off-topic: the general-domain questions, which should go to the fallback (adapter None).

Writes ``benchmarks/results/routing.json`` and prints a markdown table.
Run: ``python benchmarks/routing.py [--n 30]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

TOPICS = [("fixed_income", "qa"), ("options", "context_qa"), ("valuation", "alpaca"), ("risk", "mistral"),
          ("trading", "chat")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30, help="held-out questions per topic")
    args = ap.parse_args()
    import torch
    from rich.console import Console

    from quantgrid.data import write_records
    from quantgrid.data.finance import concepts, general_ood, generate
    from quantgrid.ml.models import build_tiny_base
    from quantgrid.ml.trainer import QuantGridTrainer
    from quantgrid.recipe import Recipe
    from quantgrid.serve.engine import Engine
    from quantgrid.serve.router import Router

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = str(build_tiny_base(root / "base", size="test", seed=0))
        engine = Engine.from_base(base, max_slots=2)
        for i, (topic, template) in enumerate(TOPICS):
            data = root / f"{topic}.jsonl"
            write_records(data, generate(60, seed=7 + i, topics=[topic]))
            out = QuantGridTrainer(base_model=base, recipe=Recipe(prompt_template=template),
                                   console=Console(quiet=True)).train(
                dataset_path=data, output_dir=root / topic, batch_size=8, grad_accum=1, max_steps=4, lr=3e-3, seed=i)
            engine.register_adapter(topic, out)
        held = {t: [e.prompt for e in generate(args.n, seed=1007 + i, topics=[t])] for i, (t, _) in enumerate(TOPICS)}
        concept = {t: [e.prompt for e in concepts() if e.meta["topic"] == t] for t, _ in TOPICS}
        ood = [e.prompt for e in general_ood()]
        results = {}
        for method in ("profile", "keywords", "arrow"):
            router = Router(engine, method)
            row: dict = {"threshold": router.threshold, "per_topic": {}}
            for name, sets in (("held_out", held), ("concepts", concept)):
                right = wrong = fallback = 0
                for topic, qs in sets.items():
                    got = [router.route(q).adapter for q in qs]
                    ok = sum(g == topic for g in got)
                    right, fallback = right + ok, fallback + sum(g is None for g in got)
                    wrong += len(got) - ok - sum(g is None for g in got)
                    if name == "held_out":
                        row["per_topic"][topic] = ok / len(qs)
                total = right + wrong + fallback
                row[name] = {"n": total, "correct": right / total, "wrong_adapter": wrong / total,
                             "fallback": fallback / total}
            row["off_topic_to_fallback"] = sum(router.route(q).adapter is None for q in ood) / len(ood)
            row["n_off_topic"] = len(ood)
            results[method] = row
    out = Path(__file__).parent / "results" / "routing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print("| method | held-out correct | concepts correct / wrong / fallback | off-topic to fallback |")
    print("|---|---:|---:|---:|")
    for method, r in results.items():
        c = r["concepts"]
        print(f"| {method} | {r['held_out']['correct']:.1%} ({r['held_out']['n']}) | {c['correct']:.1%} / "
              f"{c['wrong_adapter']:.1%} / {c['fallback']:.1%} ({c['n']}) | {r['off_topic_to_fallback']:.1%} "
              f"({r['n_off_topic']}) |")
    print("\nper topic (profile, held-out):", {t: f"{v:.0%}" for t, v in results["profile"]["per_topic"].items()})


if __name__ == "__main__":
    main()
