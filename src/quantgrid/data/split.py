"""Train/benchmark split with a leakage guarantee, and the leakage check itself.

Two items *leak* when they are the same after whitespace/case normalization (exact),
or when most of one's word n-grams appear in the other (near-duplicate): the share of
the benchmark item's n-grams found in a single train item is at least ``threshold``.
Items shorter than ``n`` words are compared as one n-gram of their whole text.

The counting is exact, not sampled: every n-gram is hashed to 64 bits (vectorized over
all texts), the train hashes are sorted into an index, and per benchmark item one
gather over its n-grams' posting ranges gives the shared count with every train item.
``ngrams`` is the readable definition the index agrees with (a test checks it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from quantgrid.data.types import Example
from quantgrid.errors import DataError

DEFAULT_N = 8
DEFAULT_THRESHOLD = 0.5
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")


def item_text(ex: Example) -> str:
    return " ".join(x for x in (ex.context, ex.prompt, ex.completion) if x)


def _norm(ex: Example) -> str:
    return " ".join(item_text(ex).lower().split())


def ngrams(text: str, n: int = DEFAULT_N) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Overlap:
    bench_index: int
    train_index: int
    kind: str  # "exact" or "near"
    score: float  # share of the benchmark item's n-grams found in the train item


@dataclass
class LeakageReport:
    n_train: int
    n_bench: int
    n: int
    threshold: float
    overlaps: list[Overlap] = field(default_factory=list)

    @property
    def exact(self) -> list[Overlap]:
        return [o for o in self.overlaps if o.kind == "exact"]

    @property
    def near(self) -> list[Overlap]:
        return [o for o in self.overlaps if o.kind == "near"]

    @property
    def leaked_bench(self) -> set[int]:
        return {o.bench_index for o in self.overlaps}

    @property
    def clean(self) -> bool:
        return not self.overlaps

    def to_dict(self) -> dict:
        return {"n_train": self.n_train, "n_bench": self.n_bench, "n": self.n, "threshold": self.threshold,
                "exact": len(self.exact), "near": len(self.near), "leaked_bench_items": len(self.leaked_bench),
                "overlaps": [o.__dict__ for o in self.overlaps]}


_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for the rolling n-gram hash


class _Grams:
    """The distinct n-grams of many texts as 64-bit hashes: ``hashes[starts[i]:starts[i+1]]`` is text i's.

    Vectorized over all texts at once (one rolling hash over the concatenated words), so
    a 20k-item set is indexed in about a second. Equal n-grams get equal hashes; a
    collision of two different ones has probability ~2^-64 per pair.
    """

    def __init__(self, texts: Sequence[str], n: int):
        words = [_WORD.findall(t.lower()) for t in texts]
        lens = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        total = int(lens.sum())
        flat = np.fromiter((hash(w) for ws in words for w in ws), dtype=np.int64, count=total).view(np.uint64)
        doc_of = np.repeat(np.arange(len(words), dtype=np.int64), lens)
        docs, hashes = [np.empty(0, np.int64)], [np.empty(0, np.uint64)]
        m = total - n + 1
        if m > 0:
            h = np.zeros(m, dtype=np.uint64)
            for k in range(n):  # uint64 arithmetic wraps: a polynomial hash mod 2^64
                h = h * _MUL + flat[k:k + m]
            ends = np.repeat(np.cumsum(lens), lens)[:m]
            valid = np.arange(m) + n <= ends  # windows that stay inside one text
            docs.append(doc_of[:m][valid])
            hashes.append(h[valid])
        short = [i for i, w in enumerate(words) if 0 < len(w) < n]  # one gram: the whole (short) text
        if short:
            docs.append(np.asarray(short, dtype=np.int64))
            hashes.append(np.asarray([hash(tuple(words[i])) for i in short], dtype=np.int64).view(np.uint64))
        doc, hsh = np.concatenate(docs), np.concatenate(hashes)
        order = np.lexsort((hsh, doc))  # by text, then hash
        doc, hsh = doc[order], hsh[order]
        keep = np.ones(len(doc), dtype=bool)
        keep[1:] = (doc[1:] != doc[:-1]) | (hsh[1:] != hsh[:-1])  # distinct per text
        self.doc, self.hashes = doc[keep], hsh[keep]
        self.starts = np.searchsorted(self.doc, np.arange(len(words) + 1))
        self.size = len(words)

    def of(self, i: int) -> np.ndarray:
        return self.hashes[self.starts[i]:self.starts[i + 1]]


class _Index:
    """n-gram hash -> texts holding it (sorted arrays), for exact shared-count queries."""

    def __init__(self, grams: _Grams):
        order = np.argsort(grams.hashes, kind="stable")
        self.hashes, self.doc = grams.hashes[order], grams.doc[order]

    def shared(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(text ids, how many of the distinct hashes ``q`` each holds), for texts sharing any."""
        left = np.searchsorted(self.hashes, q, "left")
        lens = np.searchsorted(self.hashes, q, "right") - left
        total = int(lens.sum())
        if not total:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        # All posting ranges [left, left + len) as one index array.
        idx = np.arange(total) + np.repeat(left - (np.cumsum(lens) - lens), lens)
        return np.unique(self.doc[idx], return_counts=True)


def _near(index: _Index, q: np.ndarray, threshold: float, skip: int = -1) -> list[tuple[int, float]]:
    """(text id, share of q found in it) for every text at or over ``threshold``."""
    if not len(q):
        return []
    ids, counts = index.shared(q)
    scores = counts / len(q)
    hits = (scores >= threshold) & (ids != skip)
    return [(int(i), float(s)) for i, s in zip(ids[hits], scores[hits], strict=True)]


def find_leakage(train: Sequence[Example], bench: Sequence[Example], n: int = DEFAULT_N,
                 threshold: float = DEFAULT_THRESHOLD, *, all_pairs: bool = False) -> LeakageReport:
    """Every benchmark item that appears in ``train`` exactly or as a near-duplicate.

    By default one overlap (the closest train item) per leaked benchmark item;
    ``all_pairs=True`` lists every train item over the threshold.
    """
    if not 0 < threshold <= 1:
        raise DataError(f"threshold must be in (0, 1], got {threshold}", hint="e.g. --threshold 0.5")
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}", hint="e.g. --n 8")
    report = LeakageReport(len(train), len(bench), n, threshold)
    exact_index: dict[str, list[int]] = {}
    for i, ex in enumerate(train):
        exact_index.setdefault(_norm(ex), []).append(i)
    index = _Index(_Grams([item_text(ex) for ex in train], n))
    bench_grams = _Grams([item_text(ex) for ex in bench], n)
    for b, ex in enumerate(bench):
        same = exact_index.get(_norm(ex))
        if same:
            report.overlaps += [Overlap(b, t, "exact", 1.0) for t in (same if all_pairs else same[:1])]
            continue
        hits = _near(index, bench_grams.of(b), threshold)
        if all_pairs:
            report.overlaps += [Overlap(b, t, "near", round(sc, 4)) for t, sc in hits]
        elif hits:
            t, sc = max(hits, key=lambda h: (h[1], -h[0]))
            report.overlaps.append(Overlap(b, t, "near", round(sc, 4)))
    return report


def duplicate_groups(examples: Sequence[Example], n: int = DEFAULT_N,
                     threshold: float = DEFAULT_THRESHOLD) -> tuple[list[list[int]], int, int]:
    """Groups of mutually leaking items within one set (union-find over exact and near pairs).

    Returns (groups with more than one member, number of exact-duplicate pairs, number of near pairs).
    """
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    n_exact = n_near = 0
    first: dict[str, int] = {}
    keys = [_norm(ex) for ex in examples]
    grams = _Grams([item_text(ex) for ex in examples], n)
    index = _Index(grams)
    for i, key in enumerate(keys):
        if key in first:
            parent[find(i)] = find(first[key])
            n_exact += 1
            continue
        first[key] = i
        for j, _ in _near(index, grams.of(i), threshold, skip=i):
            if keys[j] == key:
                continue  # counted as exact when j is visited
            if find(j) != find(i):
                n_near += 1
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(examples)):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1], n_exact, n_near


@dataclass
class SplitResult:
    train: list[Example]
    bench: list[Example]
    dropped: int  # near-duplicates of a benchmark item that could go to neither side


def split_examples_report(examples: Sequence[Example], benchmark_size: int, seed: int, n: int = DEFAULT_N,
                          threshold: float = DEFAULT_THRESHOLD) -> SplitResult:
    """A seeded split where no benchmark item leaks into train (see ``split_examples``)."""
    if benchmark_size < 1:
        raise DataError(f"benchmark size must be at least 1, got {benchmark_size}", hint="e.g. --benchmark-size 50")
    result = _split_singletons(examples, benchmark_size, seed, n, threshold)
    if result is None:
        result = _split_clusters(examples, benchmark_size, seed, n, threshold)
    # The guarantee, checked rather than assumed.
    leak = find_leakage(result.train, result.bench, n, threshold)
    if not leak.clean:  # pragma: no cover - would be a bug in the split
        raise DataError(f"internal error: split leaked {len(leak.overlaps)} item(s)")
    return result


def _split_singletons(examples: Sequence[Example], benchmark_size: int, seed: int, n: int,
                      threshold: float) -> SplitResult | None:
    """The fast path: draw benchmark items that have no duplicate anywhere in the set.

    One index query per drawn item instead of one per example; ``None`` when the data has
    too few such items (then whole duplicate clusters are assigned instead).
    """
    if len(examples) - benchmark_size < 1:
        return None
    grams = _Grams([item_text(ex) for ex in examples], n)
    index = _Index(grams)
    norm_counts: dict[str, int] = {}
    for ex in examples:
        key = _norm(ex)
        norm_counts[key] = norm_counts.get(key, 0) + 1
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    bench: list[int] = []
    for i in order:
        if len(bench) == benchmark_size:
            break
        if norm_counts[_norm(examples[i])] > 1 or _near(index, grams.of(i), threshold, skip=i):
            continue
        bench.append(i)
    if len(bench) < benchmark_size:
        return None
    chosen = set(bench)
    return SplitResult([ex for i, ex in enumerate(examples) if i not in chosen], [examples[i] for i in sorted(bench)], 0)


def _split_clusters(examples: Sequence[Example], benchmark_size: int, seed: int, n: int,
                    threshold: float) -> SplitResult:
    groups, _, _ = duplicate_groups(examples, n, threshold)
    member = {i: g for g in groups for i in g}
    # Each cluster of duplicates is one unit; singletons go to the benchmark first, so a
    # split drops nothing unless the data is mostly duplicates.
    units: list[list[int]] = [[i] for i in range(len(examples)) if i not in member] + groups
    rng = random.Random(seed)
    rng.shuffle(units)
    units.sort(key=len)  # stable: shuffled order kept within each size
    if len(units) <= benchmark_size:
        raise DataError(
            f"{len(examples)} examples ({len(units)} after merging duplicates) are too few for a benchmark of "
            f"{benchmark_size} plus a training set", hint="use a smaller --benchmark-size or add more data")
    bench_units, train_units = units[:benchmark_size], units[benchmark_size:]
    bench_idx = sorted(u[0] for u in bench_units)  # one representative per cluster
    dropped = sum(len(u) - 1 for u in bench_units)
    train_idx = sorted(i for u in train_units for i in u)
    return SplitResult([examples[i] for i in train_idx], [examples[i] for i in bench_idx], dropped)


def split_examples(examples: Sequence[Example], benchmark_size: int, seed: int, n: int = DEFAULT_N,
                   threshold: float = DEFAULT_THRESHOLD) -> tuple[list[Example], list[Example]]:
    """(train, benchmark): ``benchmark_size`` items held out with no exact or n-gram near-duplicate in train.

    Near-duplicate clusters stay on one side; a cluster picked for the benchmark keeps
    one representative and drops the rest (they would leak either way).
    """
    r = split_examples_report(examples, benchmark_size, seed, n, threshold)
    return r.train, r.bench
