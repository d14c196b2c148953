"""Tokenizer and parser for the "101 Formulaic Alphas" expression language.

The grammar (lowest precedence first; ``^`` and ``?:`` associate to the right)::

    expr     := or ( "?" expr ":" expr )?
    or       := and ( "||" and )*
    and      := eq ( "&&" eq )*
    eq       := cmp ( ("==" | "!=") cmp )*
    cmp      := add ( ("<" | ">" | "<=" | ">=") add )*
    add      := mul ( ("+" | "-") mul )*
    mul      := unary ( ("*" | "/") unary )*
    unary    := ("-" | "+") unary | power
    power    := atom ( "^" unary )?
    atom     := NUMBER | NAME | NAME "(" args? ")" | "(" expr ")"

Binary levels are parsed by precedence climbing (one loop, a table of binding
powers) rather than one function per level. ``-x ^ 2`` is ``-(x ^ 2)`` as in
mathematics. The result is a tree of frozen dataclasses; nothing is ever handed to
Python's ``eval``. Every syntax error is an :class:`EvalError` that names the
position and shows a caret under the offending character.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from quantgrid.errors import EvalError

# ---------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Node:
    pos: int  # character offset in the source, for error messages


@dataclass(frozen=True)
class Number(Node):
    value: float


@dataclass(frozen=True)
class Name(Node):
    """A data field (``close``, ``adv20``) or group (``IndClass.industry``)."""

    name: str


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Ternary(Node):
    cond: Node
    then: Node
    other: Node


@dataclass(frozen=True)
class Call(Node):
    func: str  # lower-cased
    args: tuple[Node, ...]


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # "num", "name", "op", "end"
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>\|\||&&|<=|>=|==|!=|[-+*/^<>?:(),])
    """,
    re.VERBOSE,
)


def caret(source: str, pos: int, width: int = 40) -> str:
    """The source with a ``^`` under ``pos`` (a window of it, when it is long): shown in every error."""
    line = re.sub(r"\s", " ", source)  # one column per character, so the caret lines up
    start, end = max(0, pos - width), pos + width
    shown = ("..." if start else "") + line[start:end] + ("..." if end < len(line) else "")
    return f"\n  {shown}\n  {' ' * (pos - start + (3 if start else 0))}^"


def _syntax_error(source: str, pos: int, what: str, hint: str | None = None) -> EvalError:
    return EvalError(
        f"syntax error at position {pos}: {what}{caret(source, pos)}",
        hint=hint or "check the brackets and operators near the caret",
    )


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN_RE.match(source, pos)
        if m is None:
            ch = source[pos]
            hint = "use '&&' and '||' for logic" if ch in "&|" else "an alpha uses numbers, fields, functions and + - * / ^ < > ? :"
            raise _syntax_error(source, pos, f"unexpected character {ch!r}", hint)
        kind = m.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


# ---------------------------------------------------------------- parser

# binding power of each binary operator; higher binds tighter
_BINARY = {
    "||": 1,
    "&&": 2,
    "==": 3, "!=": 3,
    "<": 4, ">": 4, "<=": 4, ">=": 4,
    "+": 5, "-": 5,
    "*": 6, "/": 6,
}  # fmt: skip


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            found = "the end of the expression" if self.tok.kind == "end" else repr(self.tok.text)
            raise _syntax_error(self.source, self.tok.pos, f"expected {text!r} but found {found}")
        return self.advance()

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise EvalError("empty alpha expression", hint="give an expression such as rank(-delta(close, 5))")
        node = self.expr()
        if self.tok.kind != "end":
            raise _syntax_error(self.source, self.tok.pos, f"unexpected {self.tok.text!r} after a complete expression",
                                "a missing operator or an extra ')'?")
        return node

    def expr(self) -> Node:
        cond = self.binary(0)
        if self.tok.text == "?":
            q = self.advance()
            then = self.expr()
            self.expect(":")
            other = self.expr()
            return Ternary(q.pos, cond, then, other)
        return cond

    def binary(self, min_power: int) -> Node:
        left = self.unary()
        while self.tok.kind == "op" and _BINARY.get(self.tok.text, -1) > min_power:
            op = self.advance()
            right = self.binary(_BINARY[op.text])  # left-associative: the right side binds tighter only
            left = Binary(op.pos, op.text, left, right)
        return left

    def unary(self) -> Node:
        if self.tok.text in ("-", "+"):
            op = self.advance()
            operand = self.unary()
            if op.text == "+":
                return operand
            if isinstance(operand, Number):  # fold literal negatives: windows and scales stay numbers
                return Number(op.pos, -operand.value)
            return Unary(op.pos, "-", operand)
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.tok.text == "^":
            op = self.advance()
            exponent = self.unary()  # right-associative, and allows 2 ^ -1
            return Binary(op.pos, "^", base, exponent)
        return base

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return Number(tok.pos, float(tok.text))
        if tok.kind == "name":
            self.advance()
            if self.tok.text == "(":
                self.advance()
                args: list[Node] = []
                if self.tok.text != ")":
                    args.append(self.expr())
                    while self.tok.text == ",":
                        self.advance()
                        args.append(self.expr())
                self.expect(")")
                return Call(tok.pos, tok.text.lower(), tuple(args))
            return Name(tok.pos, tok.text)
        if tok.text == "(":
            self.advance()
            node = self.expr()
            self.expect(")")
            return node
        found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise _syntax_error(self.source, tok.pos, f"expected a number, field or function but found {found}")


MAX_LENGTH = 10_000  # characters; the longest of the paper's 101 alphas has about 400


def parse(source: str) -> Node:
    """Parse one alpha expression into a tree. Raises :class:`EvalError` on bad syntax."""
    if not isinstance(source, str):
        raise EvalError(f"an alpha expression must be a string, not {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise EvalError(f"alpha expression is {len(source)} characters long (limit {MAX_LENGTH})",
                        hint="an alpha is one formula, not a program")
    try:
        return _Parser(source).parse()
    except RecursionError:  # untrusted text: "((((...))))" must be an error, not a crash
        raise EvalError("alpha expression is nested too deeply to parse",
                        hint="use fewer nested brackets and function calls") from None


# ---------------------------------------------------------------- printing


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _fold(node: Node) -> Node:
    if isinstance(node, Unary):
        inner = _fold(node.operand)
        return Number(node.pos, -inner.value) if isinstance(inner, Number) else node
    return node


def unparse(node: Node) -> str:
    """Canonical text of a tree, fully bracketed: ``parse(unparse(t)) == t`` up to positions.

    Also serves as the cache key for common subexpressions during evaluation.
    """
    if isinstance(node, Number):
        return _num(node.value) if math.copysign(1.0, node.value) > 0 else f"(-{_num(-node.value)})"
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Unary):
        node = _fold(node)  # as the parser does: -(-(2)) is the number 2
        return unparse(node) if isinstance(node, Number) else f"(-{unparse(node.operand)})"
    if isinstance(node, Binary):
        return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
    if isinstance(node, Ternary):
        return f"({unparse(node.cond)} ? {unparse(node.then)} : {unparse(node.other)})"
    if isinstance(node, Call):
        return f"{node.func}({', '.join(unparse(a) for a in node.args)})"
    raise TypeError(f"not an alpha node: {node!r}")


def walk(node: Node):
    """Yield every node of the tree, parents before children."""
    yield node
    if isinstance(node, Unary):
        yield from walk(node.operand)
    elif isinstance(node, Binary):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Ternary):
        yield from walk(node.cond)
        yield from walk(node.then)
        yield from walk(node.other)
    elif isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
