"""Finance questions with computed answers: one small function per template.

The registry and the shared helpers live here; the templates themselves are in
``fundamentals`` (valuation, statement ratios, time value, corporate finance, fixed
income) and ``markets`` (risk, portfolio, options, trading). Registration order is the
generation order, so it is fixed.

Each template draws its inputs from ``rng`` and returns an ``Item``: the question, the
worked answer and the exact value (``calc`` computes it). The value is rounded to the
decimals shown, so ``answer_value`` always equals the number the answer states.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

COMPANIES = ("Northwind Industries", "Bluefin Logistics", "Cedar Ridge Foods", "Harbor Point Energy",
             "Quill Software", "Summit Textiles", "Ironleaf Mining", "Larkspur Health", "Orchard Retail",
             "Pinecrest Telecom", "Silverline Motors", "Tidewater Shipping", "Vantage Semiconductors",
             "Willow Creek Utilities", "Keystone Chemicals", "Meridian Airlines")


@dataclass(frozen=True)
class Item:
    question: str
    working: str
    final: str  # "The P/E ratio is {v}." with {v} the formatted value
    value: float
    unit: str  # "$", "%", "x", "years", "shares", ""
    decimals: int = 2
    context: str | None = None


@dataclass(frozen=True)
class Template:
    name: str
    topic: str
    make: Callable[[random.Random], Item]


TEMPLATES: list[Template] = []


def template(name: str, topic: str):
    def deco(fn: Callable[[random.Random], Item]):
        TEMPLATES.append(Template(name, topic, fn))
        return fn
    return deco


def money(x: float, d: int = 2) -> str:
    return f"-${-x:,.{d}f}" if x < 0 else f"${x:,.{d}f}"


def pct(x: float, d: int = 2) -> str:
    """A decimal rate as a percentage: 0.0525 -> '5.25%'."""
    return f"{x * 100:.{d}f}%"


def _r(rng: random.Random, lo: float, hi: float, d: int = 2) -> float:
    return round(rng.uniform(lo, hi), d)


def _rate(rng: random.Random, lo: float, hi: float, step: float = 0.0025) -> float:
    """A rate on a grid (e.g. 0.25% steps), as a decimal."""
    return round(rng.randint(round(lo / step), round(hi / step)) * step, 6)


def _years(t: float) -> str:
    return f"{t:g} year" if t == 1 else f"{t:g} years"


def _p(r: float) -> str:
    """Input rate in text: 0.0525 -> '5.25%', 0.05 -> '5%'."""
    return f"{r * 100:g}%"


class _Text(string.Formatter):
    """``str.format`` with the templates' own format specs: ``{x:$}`` and ``{x:$0}`` money (2 or 0
    decimals), ``{x:rate}`` an input rate (0.0525 -> 5.25%), ``{x:years}`` a term ("1 year", "5 years")."""

    def format_field(self, value, format_spec: str) -> str:
        if format_spec.startswith("$"):
            return money(value, int(format_spec[1:] or 2))
        if format_spec == "rate":
            return _p(value)
        if format_spec == "years":
            return _years(value)
        return super().format_field(value, format_spec)


_TEXT = _Text()


def formula(name: str, topic: str, inputs: str, draw: Callable[[random.Random], tuple],
            value: Callable[..., float], question: str | list[str], working: str, final: str, unit: str,
            decimals: int = 2) -> None:
    """Register a template that applies one formula: ``draw(rng)`` gives the inputs, named by the
    words of ``inputs`` in order, and the answer is ``value(*inputs)``. ``question`` (or one of
    several, picked at random) and ``working`` are format strings over the inputs (see :class:`_Text`)."""
    names = inputs.split()

    def make(rng: random.Random) -> Item:
        x = dict(zip(names, draw(rng), strict=True))
        v = value(*x.values())
        q = rng.choice(question) if isinstance(question, list) else question
        return Item(_TEXT.format(q, **x), _TEXT.format(working, **x), final, v, unit, decimals)
    template(name, topic)(make)


def _returns(rng: random.Random, n: int, lo: float, hi: float) -> list[float]:
    return [round(rng.uniform(lo, hi), 3) for _ in range(n)]


def _rl(xs: list[float]) -> str:
    return ", ".join(f"{x * 100:g}%" for x in xs)


# The templates register themselves on import; fundamentals first (the order is part of the data).
from quantgrid.data.templates import fundamentals, markets  # noqa: E402,F401
