"""Leakage check: quantgrid's hashed n-gram index vs the plain all-pairs set comparison.

The plain way (what a first version of any contamination check does) builds the n-gram
set of every item and intersects each benchmark item's set with every train item's.
quantgrid hashes all n-grams in one vectorized pass and answers each benchmark item
with one gather over a sorted index (``quantgrid.data.split``). This script times both
on the same built-in finance items, checks they report exactly the same overlaps, and
prints the speed-up. It also times a full leak-free split.

    python benchmarks/leakage.py                      # 2,000 train x 200 benchmark items
    python benchmarks/leakage.py --train 20000 --bench 500
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from quantgrid.data import Example, finance
from quantgrid.data.split import find_leakage, item_text, ngrams, split_examples

RESULTS = Path(__file__).parent / "results" / "leakage.json"


def naive_leakage(train: list[Example], bench: list[Example], n: int, threshold: float) -> set[tuple[int, int]]:
    """Every leaking (bench, train) pair: exact copies, else n-gram sets intersected pair by pair."""
    def norm(e: Example) -> str:
        return " ".join(item_text(e).lower().split())

    train_sets = [ngrams(item_text(e), n) for e in train]
    train_norm = [norm(e) for e in train]
    out = set()
    for b, e in enumerate(bench):
        same = {t for t, x in enumerate(train_norm) if x == norm(e)}
        if same:  # an exact copy is reported as exact, not also as near pairs
            out |= {(b, t) for t in same}
            continue
        gb = ngrams(item_text(e), n)
        if not gb:
            continue
        for t, gt in enumerate(train_sets):
            if len(gb & gt) / len(gb) >= threshold:
                out.add((b, t))
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000, help="train items")
    ap.add_argument("--bench", type=int, default=200, help="benchmark items")
    ap.add_argument("--n", type=int, default=8, help="n-gram size")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()

    train = finance.generate(args.train, seed=1)
    # Half the benchmark is fresh items, half lightly edited copies of train items (real leaks).
    fresh = finance.generate(args.bench - args.bench // 2, seed=2)
    edited = [Example(e.prompt + " Show your working.", e.completion, e.context) for e in train[: args.bench // 2]]
    bench = fresh + edited

    fast, t_fast = timed(lambda: find_leakage(train, bench, args.n, args.threshold, all_pairs=True))
    slow, t_slow = timed(lambda: naive_leakage(train, bench, args.n, args.threshold))
    fast_pairs = {(o.bench_index, o.train_index) for o in fast.overlaps}
    assert fast_pairs == slow, f"disagree: {len(fast_pairs ^ slow)} pairs"
    _, t_split = timed(lambda: split_examples(train, max(1, args.train // 10), seed=0))

    result = {
        "benchmark": "leakage", "n_train": args.train, "n_bench": args.bench, "n": args.n,
        "threshold": args.threshold, "overlapping_pairs": len(slow), "leaked_bench_items": len(fast.leaked_bench),
        "seconds_quantgrid": round(t_fast, 4), "seconds_naive_all_pairs": round(t_slow, 4),
        "speedup": round(t_slow / t_fast, 2), "seconds_split_10pct": round(t_split, 4),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| check | items | seconds | speed-up |\n|---|---|---|---|\n"
          f"| naive all-pairs sets | {args.train} x {args.bench} | {t_slow:.3f} | 1.0x |\n"
          f"| quantgrid hashed index | {args.train} x {args.bench} | {t_fast:.3f} | {t_slow / t_fast:.1f}x |\n"
          f"| quantgrid leak-free split (10% held out) | {args.train} | {t_split:.3f} | |\n\n"
          f"Both found the same {len(slow)} overlapping pairs ({len(fast.leaked_bench)} leaked benchmark items).")


if __name__ == "__main__":
    main()
