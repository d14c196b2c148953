"""Release quality: which merge makes a release better than every adapter in it?

N contributors each train a LoRA adapter on their own finance topic (own data, own seed)
on a tiny base. The hidden benchmark (every topic) is split in two halves per topic: the
fitting half (used only by the ``fit`` weightings) and the held-out half, on which every
option is measured the same way the hub's release does (``merge.release.quality``):

* union loss: mean loss of the release over all topics, against the best single adapter;
* retention: per contributor, (base - release) / (base - adapter) on that adapter's own
  topic slice (the goal is >= 80% for everyone);
* time to build (merge, plus the weight search for ``fit``).

    python benchmarks/release_quality.py                       # 8 contributors, test-size base
    python benchmarks/release_quality.py --n 6 --steps 60 --size demo

Writes benchmarks/results/release_quality.json; BENCHMARKS.md reports it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from quantgrid.data.finance import TOPICS, generate
from quantgrid.merge import release as R
from quantgrid.merge.methods import LoraFactors
from quantgrid.recipe import Recipe

RESULTS = Path(__file__).parent / "results" / "release_quality.json"


def train(base: str, recipe: Recipe, topics: list[str], steps: int, lr: float, n_examples: int) -> list:
    """One adapter per topic, fresh PEFT initialisation from its own seed, plain AdamW."""
    from quantgrid.ml.models import attach_lora, load_base
    from quantgrid.ml.tokenize import IGNORE_INDEX, encode

    model, tok = load_base(base, device="cpu")
    model = attach_lora(model, recipe)
    lora = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    out = []
    for i, topic in enumerate(topics):
        seed = 100 + i
        torch.manual_seed(seed)
        with torch.no_grad():
            for n, p in lora:
                torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5)) if "lora_A" in n else p.zero_()
        enc = [encode(tok, ex, recipe.prompt_template, 128, recipe.system_prompt)
               for ex in generate(n_examples, seed, [topic])]
        opt = torch.optim.AdamW([p for _, p in lora], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            rows = [enc[j] for j in torch.randint(0, len(enc), (16,), generator=gen).tolist()]
            width = max(len(e) for e in rows)
            ids = torch.tensor([e.input_ids + [tok.pad_token_id] * (width - len(e)) for e in rows])
            labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e)) for e in rows])
            opt.zero_grad()
            model(input_ids=ids, labels=labels).loss.backward()
            opt.step()
        sd = {n: p.detach().clone() for n, p in lora}
        factors = {n.split(".lora_A")[0]: LoraFactors(sd[n], sd[n.replace("lora_A", "lora_B")], recipe.lora.scaling)
                   for n in sd if "lora_A" in n}
        out.append(R.Contribution(id=f"{i:02d}", contributor=f"c{i}-{topic}", factors=factors))
    return out


OPTIONS = {
    "mean, svd rank 16 (the old default)": dict(opts=R.BuildOptions(weighting="equal", rank=16)),
    "mean, adaptive rank": dict(opts=R.BuildOptions(weighting="equal")),
    "sum (task arithmetic), adaptive rank": dict(opts=R.BuildOptions(weighting="sum")),
    "TIES d=0.5 (mean weights), adaptive rank": dict(opts=R.BuildOptions(method="ties", weighting="equal",
                                                                          options={"density": 0.5})),
    "DARE-TIES d=0.5 (mean weights), adaptive rank": dict(opts=R.BuildOptions(method="dare_ties", weighting="equal",
                                                                               options={"density": 0.5})),
    "fit, loss only (LoraHub objective)": dict(opts=R.BuildOptions(weighting="fit"), retention_target=0.0),
    "fit, loss + retention shortfall (the default)": dict(opts=R.BuildOptions(weighting="fit"),
                                                          retention_target=0.8),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="contributors, one topic each")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--per-topic", type=int, default=30, help="hidden benchmark items per topic")
    ap.add_argument("--size", default="test", help="tiny base size (quantgrid base tiny --size)")
    ap.add_argument("--base", default=None, help="an existing base directory instead of building one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    topics = TOPICS[:args.n]
    with tempfile.TemporaryDirectory(prefix="qg-release-quality-") as tmp:
        base = args.base
        if base is None:
            from quantgrid.ml.models import build_tiny_base

            base = str(build_tiny_base(Path(tmp) / "base", size=args.size, seed=0))
        recipe = Recipe.from_dict({"base_model": base, "training": {"max_seq_length": 256}})
        t0 = time.perf_counter()
        contribs = train(base, recipe, topics, args.steps, args.lr, args.examples)
        train_s = time.perf_counter() - t0
        bench = generate(args.per_topic * len(topics), 7, topics)
        ev = R.Evaluator(base, recipe, bench)
        scratch = Path(tmp) / "scratch"
        base_l, singles = R.single_losses(ev, contribs, scratch)
        fit_idx, held_idx = R.split_benchmark(bench)
        who = {c.id: c.contributor for c in contribs}
        rows = {}
        for label, spec in OPTIONS.items():
            opts = spec["opts"]
            t = time.perf_counter()
            trace = None
            if opts.weighting == "fit":
                weights, trace = R.fit_weights(ev, contribs, recipe, opts, fit_idx, scratch, base_l, singles,
                                               retention_target=spec.get("retention_target", 0.8))
                opts = R.BuildOptions(**{**opts.__dict__, "weights": weights})
            res, _ = R.merge_contributions(contribs, recipe, opts)
            build_s = time.perf_counter() - t
            name = ev.add_factors(res.factors, res.rank, scratch)
            loss = ev.losses([name])[name]
            ev.remove(name)
            q = R.quality(base_l, loss, singles, bench, held_idx, who)
            rows[label] = {"rank": res.rank, "union_loss": q["overall"]["release"],
                           "best_single": q["best_single"]["loss"], "base": q["overall"]["base"],
                           "vs_best_single": q["overall"]["release"] - q["best_single"]["loss"],
                           "min_retention": q["min_retention"],
                           "mean_retention": sum(r["retention"] for r in q["retention"].values()
                                                 if r["retention"] is not None) / len(q["retention"]),
                           "build_s": build_s, "evaluations": trace["evaluations"] if trace else 0,
                           "weights": [round(w, 4) for w in res.weights]}
            r = rows[label]
            print(f"{label:48s} rank {r['rank']:4d}  union {r['union_loss']:.4f} ({r['vs_best_single']:+.4f} vs best "
                  f"single)  retention min {r['min_retention']:.0%} mean {r['mean_retention']:.0%}  "
                  f"{r['build_s']:.1f} s", flush=True)
    out = {"machine": platform.platform(), "torch_threads": torch.get_num_threads(), "args": vars(args),
           "train_s": train_s, "n_held_out": len(held_idx), "n_fit": len(fit_idx), "options": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
