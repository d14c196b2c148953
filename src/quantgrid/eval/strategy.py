"""Structure checks for generated QuantConnect (LEAN) Python strategies, by ``ast`` only.

The code is parsed, never compiled to bytecode, imported or run: a model's answer
is untrusted text. (A future metric that runs strategies must do it in a subprocess
with resource limits and no network, never in the server process.)

A strategy passes the structure check when it has a class deriving from
``QCAlgorithm`` with an ``Initialize`` method and an ``OnData`` method. LEAN's
PEP 8 spellings (``initialize``, ``on_data``) count too. Softer checks (a start date,
cash, a subscribed security) and red flags (``eval``/``exec``/``subprocess``, file or
network access) are reported alongside, and as regexes for the pattern-compliance
metric (:data:`STRATEGY_PATTERNS`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field

REQUIRED = ("algorithm_class", "initialize", "on_data")
_INITIALIZE = {"Initialize", "initialize"}
_ON_DATA = {"OnData", "on_data"}
_SETUP_CALLS = {
    "start_date": {"SetStartDate", "set_start_date"},
    "cash": {"SetCash", "set_cash"},
    "security": {"AddEquity", "add_equity", "AddForex", "add_forex", "AddCrypto", "add_crypto", "AddFuture",
                 "add_future", "AddOption", "add_option", "AddUniverse", "add_universe", "AddCfd", "add_cfd",
                 "AddIndex", "add_index", "SetUniverseSelection", "set_universe_selection"},
}  # fmt: skip
_DANGEROUS_CALLS = {"eval", "exec", "compile", "__import__", "open", "system", "popen"}
_DANGEROUS_MODULES = {"os", "subprocess", "socket", "shutil", "ctypes", "requests", "urllib", "http", "sys", "pickle"}

# must-appear / must-not-appear regexes, in the shape the pattern-compliance metric takes
STRATEGY_PATTERNS = {
    "must": [r"class\s+\w+\s*\([^)]*QCAlgorithm[^)]*\)\s*:", r"def\s+(Initialize|initialize)\s*\(",
             r"def\s+(OnData|on_data)\s*\("],
    "must_not": [r"\b(eval|exec)\s*\(", r"\bimport\s+(os|subprocess|socket)\b", r"\bsubprocess\."],
}


@dataclass
class StrategyCheck:
    """What the structure check found in one answer; ``score`` is the share of REQUIRED checks passed."""

    parses: bool
    error: str | None = None
    class_name: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(self.checks.get(k, False) for k in REQUIRED) / len(REQUIRED)

    @property
    def ok(self) -> bool:
        """Structurally a LEAN algorithm, with nothing dangerous in it."""
        return self.parses and all(self.checks.get(k, False) for k in REQUIRED) and not self.warnings

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score, "ok": self.ok}


def extract_code(answer: str) -> str:
    """The Python inside a model's answer: the first ```python fence (or any fence), else the whole text."""
    fences = re.findall(r"```([a-zA-Z0-9_+-]*)[ \t]*\n(.*?)```", answer, re.S)
    for lang, body in fences:
        if lang.lower() in ("python", "py", "python3"):
            return body
    return fences[0][1] if fences else answer


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _called_names(body: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(body):
        if isinstance(node, ast.Call):
            names.add(_base_name(node.func))
    return names


def check_strategy(answer: str) -> StrategyCheck:
    """Check one generated strategy's structure without executing it."""
    code = extract_code(answer)
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the source
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        return StrategyCheck(False, f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}{where}",
                             checks={k: False for k in REQUIRED})
    result = StrategyCheck(True)
    algo = None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any("QCAlgorithm" in _base_name(b) for b in node.bases):
            algo = node
            break
    methods: dict[str, ast.FunctionDef] = {}
    if algo is not None:
        result.class_name = algo.name
        methods = {n.name: n for n in algo.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    init = next((methods[n] for n in _INITIALIZE if n in methods), None)
    result.checks = {
        "algorithm_class": algo is not None,
        "initialize": init is not None,
        "on_data": any(n in methods for n in _ON_DATA),
    }
    called = _called_names(init) if init is not None else set()
    for key, names in _SETUP_CALLS.items():
        result.checks[f"sets_{key}"] = bool(called & names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DANGEROUS_CALLS:
            result.warnings.append(f"line {node.lineno}: calls {node.func.id}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("system", "popen"):
            result.warnings.append(f"line {node.lineno}: calls .{node.func.attr}()")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in _DANGEROUS_MODULES:
                    result.warnings.append(f"line {node.lineno}: imports {m}")
    return result


def score_strategies(answers: list[str]) -> dict:
    """Compile rate (share that parse), structure rate (share with all REQUIRED checks), per-item results."""
    items = [check_strategy(a if isinstance(a, str) else "") for a in answers]
    n = len(items) or 1
    return {
        "n": len(items),
        "compile_rate": sum(it.parses for it in items) / n,
        "structure_rate": sum(all(it.checks.get(k, False) for k in REQUIRED) for it in items) / n,
        "mean_score": sum(it.score for it in items) / n,
        "flagged": sum(bool(it.warnings) for it in items),
        "items": [it.to_dict() for it in items],
    }
