"""Built-in finance Q&A: computed-answer templates, hand-written concepts, and a
general-domain out-of-domain set.

``generate(n, seed)`` is reproducible: the same seed gives the same items, another seed
other items from the same templates. Every computed item carries ``meta["topic"]``,
``meta["template"]`` and ``meta["answer_value"]`` (the number the answer states, so
exact-match metrics compare numerically) and ``meta["unit"]``.

The concept questions and the out-of-domain questions were written for quantgrid and
live in ``builtin/concepts.txt`` and ``builtin/general_ood.txt`` (blocks of
``topic:``/``Q:``/``A:`` lines), so they read as text rather than code.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from pathlib import Path

from quantgrid.data.templates import TEMPLATES, Item, money
from quantgrid.data.types import Example
from quantgrid.errors import DataError

BUILTIN_DIR = Path(__file__).parent / "builtin"

TOPICS: list[str] = sorted({t.topic for t in TEMPLATES})
RISK_NOTE = "This is an educational calculation, not investment advice."


def _example(item: Item, topic: str, name: str) -> Example:
    value = round(item.value, item.decimals)
    value = 0.0 if value == 0 else value  # no "-0.00"
    if item.unit == "$":
        final = item.final.replace("${v}", money(value, item.decimals))
    else:
        final = item.final.format(v=f"{value:,.{item.decimals}f}")
    meta = {"topic": topic, "template": name, "answer_value": value, "unit": item.unit}
    return Example(prompt=item.question, completion=f"{item.working} {final}", context=item.context, meta=meta)


def generate(n: int, seed: int, topics: list[str] | None = None) -> list[Example]:
    """``n`` computed-answer questions drawn from ``seed``, cycling evenly through the templates."""
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}", hint="pass --n 1 or more")
    templates = TEMPLATES
    if topics:
        unknown = sorted(set(topics) - set(TOPICS))
        if unknown:
            raise DataError(f"unknown finance topic(s): {', '.join(unknown)}", hint=f"choose from: {', '.join(TOPICS)}")
        templates = [t for t in TEMPLATES if t.topic in topics]
    rng = random.Random(seed)
    out: list[Example] = []
    seen: set[tuple[str, str | None]] = set()
    order: list = []
    attempts = 0
    while len(out) < n:
        if not order:  # a fresh shuffled cycle: topics stay balanced, order still varies
            order = list(templates)
            rng.shuffle(order)
        t = order[-1]
        ex = _example(t.make(rng), t.topic, t.name)
        attempts += 1
        if (ex.prompt, ex.context) in seen and attempts < 50 * (n + 10):
            continue  # the same question twice would be an exact duplicate: draw this template again
        order.pop()
        seen.add((ex.prompt, ex.context))
        out.append(ex)
    return out


# ---------------------------------------------------------------- hand-written sets


def _read_blocks(filename: str, source: str) -> list[Example]:
    """Blocks separated by blank lines; ``topic:``, ``Q:``, ``A:`` and optional ``C:`` (context) lines."""
    text = (BUILTIN_DIR / filename).read_text(encoding="utf-8")
    out = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            head, sep, rest = line.partition(": ")
            if sep and head in ("topic", "Q", "A", "C"):
                key = head
                fields[key] = rest.strip()
            elif key:  # continuation line
                fields[key] += "\n" + line
        if block.lstrip().startswith("#"):
            continue
        meta = {"topic": fields.get("topic", "general"), "source": source}
        out.append(Example(prompt=fields["Q"], completion=fields["A"], context=fields.get("C"), meta=meta))
    return out


@functools.cache
def _concepts() -> tuple[Example, ...]:
    return tuple(_read_blocks("concepts.txt", "concepts"))


@functools.cache
def _ood() -> tuple[Example, ...]:
    return tuple(_read_blocks("general_ood.txt", "general-ood"))


def concepts() -> list[Example]:
    """Hand-written finance concept Q&A: definitions, explanations, formulaic alphas."""
    return [Example(e.prompt, e.completion, e.context, dict(e.meta)) for e in _concepts()]


def general_ood(n: int | None = None, seed: int = 0) -> list[Example]:
    """General-domain (non-finance) questions; ``n`` picks a seeded sample of them."""
    items = [Example(e.prompt, e.completion, e.context, dict(e.meta)) for e in _ood()]
    if n is None:
        return items
    if n > len(items):
        raise DataError(f"only {len(items)} out-of-domain items exist, asked for {n}", hint=f"pass n <= {len(items)}")
    return random.Random(seed).sample(items, n)


# ---------------------------------------------------------------- tokenizer corpus


def tokenizer_corpus(seed: int = 0) -> Iterator[str]:
    """Texts to train the tiny base's BPE tokenizer on: rendered finance, concepts and OOD.

    Each kind of item appears in the prompt layouts quantgrid uses (plain Q/A, context,
    Alpaca, Mistral, chat markers), so their markers become single tokens.
    """
    from quantgrid.data.prompts import render

    items = generate(1500, seed=seed) + concepts() + general_ood()
    layouts = ("qa", "alpaca", "mistral")
    for i, ex in enumerate(items):
        prompt, completion = render(ex, layouts[i % len(layouts)])
        yield prompt + completion
        if i % 5 == 0:
            yield f"<|system|>\n{RISK_NOTE}\n<|user|>\n{ex.prompt}\n<|assistant|>\n{ex.completion}"
