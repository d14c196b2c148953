"""Compile an alpha (parse + check names, arity and argument kinds) and evaluate it on a panel.

"Compiles" means what it means for a compiler: the text parses, every function and
field exists, every call has the right number and kind of arguments, and no window
reaches into the future. Whether the *data* has the columns the alpha needs, and
enough dates for its windows, is checked when it runs on a panel.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

import numpy as np

from quantgrid.errors import EvalError

from . import operators as ops
from .grammar import Binary, Call, Name, Node, Number, Ternary, Unary, caret, parse, unparse, walk
from .panel import GROUP_FIELDS, Panel

_ADV = re.compile(r"^adv(\d+)$")
MAX_WINDOW = 10_000  # trading days (40 years): beyond it a window is a typo, and int() of 1e999 fails
BASE_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "returns", "cap")


# adv{d} is the paper's "average daily dollar volume for the past d days": shares traded
# times the day's price, the vwap (which the panel derives from high/low/close when the file
# has none). The paper's own formulas then compare it with share volume as printed
# ("adv20 < volume", Alphas #7 and #21); those comparisons are evaluated as printed.
ADV_COLUMNS = ("volume", "vwap")


def dollar_volume(fields: dict[str, np.ndarray]) -> np.ndarray:
    return fields["volume"] * fields["vwap"]


def _group_name(name: str) -> str | None:
    """``IndClass.industry`` / ``industry`` -> ``industry``; None for a non-group name."""
    low = name.lower()
    if low.startswith("indclass."):
        low = low.split(".", 1)[1]
    return low if low in GROUP_FIELDS else None


def _known_names() -> list[str]:
    return list(BASE_FIELDS) + ["adv20"] + [f"IndClass.{g}" for g in GROUP_FIELDS]


def _error(source: str, node: Node, message: str, hint: str) -> EvalError:
    return EvalError(f"{message} (position {node.pos}){caret(source, node.pos)}", hint=hint)


@dataclass(frozen=True)
class Alpha:
    """A compiled alpha: its canonical tree, the data it reads and the history it needs."""

    source: str
    tree: Node
    fields: frozenset[str]  # price fields, e.g. {"close", "adv20"}
    groups: frozenset[str]  # group levels, e.g. {"industry"}
    lookback: int  # past rows needed before the first value: 0 for ``close``

    @property
    def canonical(self) -> str:
        return unparse(self.tree)

    def evaluate(self, panel: Panel) -> np.ndarray:
        """The ``(T, N)`` signal: row t uses only data up to and including date t."""
        check_panel(self, panel)
        return _Evaluator(panel).run(self.tree)


# ---------------------------------------------------------------- compiling


def compile_alpha(source: str) -> Alpha:
    """Parse and check an expression. Raises :class:`EvalError` (with the position) on any problem."""
    tree = _check(source, parse(source))
    fields, groups = set(), set()
    for node in walk(tree):
        if isinstance(node, Name):
            g = _group_name(node.name)
            if g:
                groups.add(g)
            else:
                fields.add(node.name)
    return Alpha(source, tree, frozenset(fields), frozenset(groups), _lookback(tree))


def _check(source: str, node: Node, role: str = "x") -> Node:
    """Validate one node for the role it plays ("x" series, "g" group) and return it normalized."""
    if isinstance(node, Number):
        return node
    if isinstance(node, Name):
        g = _group_name(node.name)
        if role == "g":
            if g is None:
                raise _error(source, node, f"{node.name!r} is not an industry group",
                             f"use one of {', '.join('IndClass.' + x for x in GROUP_FIELDS)}")
            return Name(node.pos, f"IndClass.{g}")
        if g is not None:
            raise _error(source, node, f"{node.name} is a group label, not a number",
                         "use it only as the second argument of indneutralize(x, IndClass.industry)")
        low = node.name.lower()
        if low in BASE_FIELDS or _ADV.match(low):
            if _ADV.match(low) and not 1 <= int(low[3:]) <= MAX_WINDOW:
                raise _error(source, node, f"{node.name}: an average over {int(low[3:])} days",
                             "use adv20, adv60, ...")
            return Name(node.pos, low)
        close = difflib.get_close_matches(low, _known_names() + list(ops.OPS), n=3, cutoff=0.6)
        raise _error(source, node, f"unknown field {node.name!r}",
                     (f"did you mean {' or '.join(close)}? " if close else "")
                     + f"fields: {', '.join(BASE_FIELDS)}, advN (e.g. adv20), IndClass.sector/industry/subindustry")
    if role == "g":
        raise _error(source, node, "the group argument must be a name such as IndClass.industry",
                     "write indneutralize(x, IndClass.industry)")
    if isinstance(node, Unary):
        return replace(node, operand=_check(source, node.operand))
    if isinstance(node, Binary):
        return replace(node, left=_check(source, node.left), right=_check(source, node.right))
    if isinstance(node, Ternary):
        return replace(node, cond=_check(source, node.cond), then=_check(source, node.then),
                       other=_check(source, node.other))
    assert isinstance(node, Call)
    name = ops.ALIASES.get(node.func, node.func)
    if name not in ops.OPS:
        close = difflib.get_close_matches(node.func, list(ops.OPS) + list(ops.ALIASES), n=3, cutoff=0.6)
        raise _error(source, node, f"unknown operator {node.func!r}",
                     (f"did you mean {' or '.join(close)}? " if close else "")
                     + f"operators: {', '.join(sorted(ops.OPS))}")
    # the paper's min(x, d) / max(x, d) with a number are time-series operators
    if name in ("min", "max") and len(node.args) == 2 and isinstance(node.args[1], Number):
        name = "ts_" + name
    op = ops.OPS[name]
    if not op.min_args <= len(node.args) <= len(op.signature):
        want = str(op.min_args) if op.min_args == len(op.signature) else f"{op.min_args} to {len(op.signature)}"
        raise _error(source, node, f"{node.func}() takes {want} argument(s) but got {len(node.args)}",
                     f"usage: {op.usage}: {op.doc}")
    args = []
    for arg, kind in zip(node.args, op.signature, strict=False):  # not strict: optional trailing arguments
        kind = kind.rstrip("?")
        if kind in ("d", "a"):
            if not isinstance(arg, Number):
                what = "a window in days" if kind == "d" else "a constant"
                raise _error(source, arg, f"argument of {node.func}() must be {what} (a number), not an expression",
                             f"usage: {op.usage}")
            if kind == "d":
                if arg.value < 1:
                    raise _error(source, arg, f"{node.func}() window {_fmt(arg.value)} is not a positive number of days",
                                 "windows look back 1 or more days; future data is never available")
                if not arg.value <= MAX_WINDOW:
                    raise _error(source, arg, f"{node.func}() window {_fmt(arg.value)} is longer than {MAX_WINDOW} days",
                                 "use a window of at most a few years of trading days")
                arg = Number(arg.pos, float(int(arg.value)))  # the paper floors non-integer windows
            args.append(arg)
        else:
            args.append(_check(source, arg, kind))
    return Call(node.pos, name, tuple(args))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _lookback(node: Node) -> int:
    """How many past rows the first non-NaN value needs (the sum of the windows along the deepest path)."""
    if isinstance(node, Number):
        return 0
    if isinstance(node, Name):
        m = _ADV.match(node.name)
        # adv_d averages d days of dollar volume; returns need yesterday's close
        return int(m.group(1)) - 1 if m else (1 if node.name == "returns" else 0)
    if isinstance(node, Unary):
        return _lookback(node.operand)
    if isinstance(node, Binary):
        return max(_lookback(node.left), _lookback(node.right))
    if isinstance(node, Ternary):
        return max(_lookback(node.cond), _lookback(node.then), _lookback(node.other))
    assert isinstance(node, Call)
    op = ops.OPS[node.func]
    inner = max((_lookback(a) for a, k in zip(node.args, op.signature, strict=False) if k.rstrip("?") == "x"), default=0)
    windows = [int(a.value) for a, k in zip(node.args, op.signature, strict=False) if k == "d"]
    return inner + (op.history(windows[0]) if windows else 0)


# ---------------------------------------------------------------- checking data


def check_panel(alpha: Alpha, panel: Panel, min_dates: int = 1) -> None:
    """Raise a clear error if the panel lacks a column the alpha reads or is too short for its windows."""
    have = set(panel.fields)
    for f in sorted(alpha.fields):
        need = ADV_COLUMNS if _ADV.match(f) else ("close",) if f == "returns" else (f,)
        missing = [c for c in need if c not in have]
        if missing:
            raise EvalError(f"the alpha uses {f!r} but the price panel ({panel.source}) has no {' or '.join(missing)} column",
                            hint=f"add a {missing[0]!r} column to the price file, or write the alpha without {f!r}")
    for g in sorted(alpha.groups):
        if g not in panel.groups:
            raise EvalError(f"the alpha uses IndClass.{g} but the price panel ({panel.source}) has no {g!r} column",
                            hint=f"add a {g!r} column (one label per ticker) to the price file")
    T = panel.shape[0]
    if alpha.lookback + min_dates > T:
        raise EvalError(
            f"the panel is too short for this alpha: its windows need {alpha.lookback} past dates "
            f"+ {min_dates} to trade, but the panel has {T}",
            hint="use a longer price history or shorter windows",
        )


# ---------------------------------------------------------------- evaluating


class _Evaluator:
    """Walks a checked tree bottom-up; repeated subexpressions are computed once (keyed by their text)."""

    def __init__(self, panel: Panel):
        self.panel = panel
        self.cache: dict[str, object] = {}
        self.shape = panel.shape

    def run(self, tree: Node) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = self.value(tree)
        out = np.broadcast_to(np.asarray(out, dtype=np.float64), self.shape).copy()
        return np.where(np.isfinite(out), out, np.nan)

    def series(self, node: Node) -> np.ndarray:
        """The node's value as a full (T, N) array (a number is spread over every cell).

        Arrays are shared through the cache, so operators never modify their inputs.
        """
        v = self.value(node)
        if isinstance(v, np.ndarray) and v.shape == self.shape:
            return v
        return np.full(self.shape, v, dtype=np.float64) if np.ndim(v) == 0 else np.broadcast_to(v, self.shape).copy()

    def value(self, node: Node):
        if isinstance(node, Number):
            return node.value
        key = unparse(node)
        if key not in self.cache:
            self.cache[key] = self._compute(node)
        return self.cache[key]

    def _field(self, name: str) -> np.ndarray:
        f = self.panel.fields
        if name == "returns":
            return ops.delta(f["close"], 1) / ops.delay(f["close"], 1)
        m = _ADV.match(name)
        if m:
            return ops.ts_mean(dollar_volume(f), int(m.group(1)))
        return f[name]

    def _compute(self, node: Node):
        if isinstance(node, Name):
            return self._field(node.name)
        if isinstance(node, Unary):
            return -self.series(node.operand)
        if isinstance(node, Binary):
            a, b = self.value(node.left), self.value(node.right)
            return _binary(node.op, a, b)
        if isinstance(node, Ternary):
            cond = self.series(node.cond)
            out = np.where(cond != 0, self.series(node.then), self.series(node.other))
            return np.where(np.isnan(cond), np.nan, out)
        assert isinstance(node, Call)
        op = ops.OPS[node.func]
        args = []
        for arg, kind in zip(node.args, op.signature, strict=False):
            kind = kind.rstrip("?")
            if kind == "d":
                args.append(int(arg.value))
            elif kind == "a":
                args.append(arg.value)
            elif kind == "g":
                args.append(self.panel.groups[_group_name(arg.name)])
            else:
                args.append(self.series(arg))
        return ops.finite(op.fn(*args))


def _binary(op: str, a, b):
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return ops.finite(np.divide(a, b))
    if op == "^":
        return ops.power(a, b)
    nan = np.isnan(a) | np.isnan(b)  # a comparison with a missing value is missing, not False
    if op in ("&&", "||"):
        truth = (a != 0) & (b != 0) if op == "&&" else (a != 0) | (b != 0)
    else:
        truth = {"<": np.less, ">": np.greater, "<=": np.less_equal, ">=": np.greater_equal,
                 "==": np.equal, "!=": np.not_equal}[op](a, b)
    return np.where(nan, np.nan, np.asarray(truth, dtype=np.float64))
