"""Enough of Go's text/template, and of Ollama's way of running a Modelfile TEMPLATE, to
check our templates without an Ollama binary.

Supported: text, ``{{ .X }}`` / ``{{ $.X }}`` / ``{{ $var }}``, ``{{ if P }}…{{ else if P }}…
{{ else }}…{{ end }}``, ``{{ range $i, $m := .Messages }}…{{ end }}``, and the functions
``eq``, ``len``, ``slice`` with string and int literals and parenthesised calls: the subset
quantgrid's templates use. Anything else raises, so a template outside the subset fails
the test instead of being rendered wrongly.

:func:`ollama_prompt` follows Ollama's ``template.Execute``: a template that uses
``.Messages`` is run once with every message; any other is run once per user/assistant
pair (``.Prompt``, ``.Response``, and ``.System`` for the first one), the last pair with an
empty ``.Response``.
"""

from __future__ import annotations

import re
import shlex

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


def _parse(src: str):
    pos, tokens = 0, []
    for m in _ACTION.finditer(src):
        if m.start() > pos:
            tokens.append(("text", src[pos:m.start()]))
        tokens.append(("act", m.group(1)))
        pos = m.end()
    if pos < len(src):
        tokens.append(("text", src[pos:]))
    tokens.reverse()

    def block(stop: tuple[str, ...]):
        nodes = []
        while tokens:
            kind, val = tokens.pop()
            if kind == "text":
                nodes.append(("text", val))
            elif val == "end" or val == "else" or val.startswith("else if "):
                if val.split(" ")[0] not in stop and not (val.startswith("else") and "else" in stop):
                    raise ValueError(f"unexpected {{{{ {val} }}}}")
                return nodes, val
            elif val.startswith("if "):
                nodes.append(_if(val[3:]))
            elif val.startswith("range "):
                m = re.fullmatch(r"range \$(\w+), \$(\w+) := (.+)", val)
                if not m:
                    raise ValueError(f"unsupported range {val!r}")
                body, end = block(("end",))
                nodes.append(("range", m.group(1), m.group(2), m.group(3), body))
            else:
                nodes.append(("expr", val))
        if stop:
            raise ValueError("missing {{ end }}")
        return nodes, None

    def _if(cond: str):
        branches = []
        while True:
            body, end = block(("end", "else"))
            branches.append((cond, body))
            if end == "end":
                return ("if", branches)
            cond = end[len("else if "):] if end.startswith("else if ") else "true"

    nodes, _ = block(())
    return nodes


def _split(expr: str) -> list[str]:
    out, depth, cur = [], 0, ""
    lex = shlex.shlex(expr, posix=False)
    lex.whitespace_split, lex.commenters = True, ""
    for part in lex:
        depth += part.count("(") - part.count(")")
        cur = f"{cur} {part}" if cur else part
        if depth == 0:
            out.append(cur)
            cur = ""
    return out


def _eval(expr: str, dot, root, env):
    expr = expr.strip()
    if expr == "true":
        return True
    if expr.startswith("(") and expr.endswith(")"):
        return _eval(expr[1:-1], dot, root, env)
    parts = _split(expr)
    if len(parts) > 1:
        fn, args = parts[0], [_eval(a, dot, root, env) for a in parts[1:]]
        if fn == "eq":
            return args[0] == args[1]
        if fn == "len":
            return len(args[0])
        if fn == "slice":
            return args[0][args[1]:args[2]] if len(args) > 2 else args[0][args[1]:]
        raise ValueError(f"unsupported function {fn!r}")
    if expr.startswith('"'):
        return expr[1:-1]
    if re.fullmatch(r"-?\d+", expr):
        return int(expr)
    if expr.startswith("$."):
        return root[expr[2:]]
    if expr.startswith("$"):
        return env[expr[1:]]
    if expr.startswith("."):
        return dot[expr[1:]]
    raise ValueError(f"unsupported expression {expr!r}")


def _run(nodes, dot, root, env) -> str:
    out = []
    for n in nodes:
        if n[0] == "text":
            out.append(n[1])
        elif n[0] == "expr":
            out.append(str(_eval(n[1], dot, root, env)))
        elif n[0] == "if":
            for cond, body in n[1]:
                if _eval(cond, dot, root, env):
                    out.append(_run(body, dot, root, env))
                    break
        else:
            _, iv, mv, seq, body = n
            for i, item in enumerate(_eval(seq, dot, root, env)):
                out.append(_run(body, item, root, {**env, iv: i, mv: item}))
    return "".join(out)


def render(template: str, values: dict) -> str:
    return _run(_parse(template), values, values, {})


def ollama_prompt(template: str, messages: list[dict], system: str | None = None) -> str:
    """The prompt Ollama builds from ``template`` for ``messages`` (SYSTEM from the Modelfile
    is used when the messages have no system message)."""
    msgs = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    if system and not any(m["Role"] == "system" for m in msgs):
        msgs.insert(0, {"Role": "system", "Content": system})
    if ".Messages" in template:
        sys_text = "\n\n".join(m["Content"] for m in msgs if m["Role"] == "system")
        return render(template, {"System": sys_text, "Messages": [m for m in msgs if m["Role"] != "system"]})
    # Legacy: every .Response must sit inside {{ if .Response }}, so Ollama's cut of the
    # last pair at .Response cannot change what it renders.
    assert template.count("{{ .Response }}") == template.count("{{ if .Response }}")
    out, sys_text, prompt, response = [], "", "", ""
    for m in msgs:
        if m["Role"] == "system":
            if prompt or response:
                out.append(render(template, {"System": sys_text, "Prompt": prompt, "Response": response}))
                prompt = response = ""
            sys_text = m["Content"]
        elif m["Role"] == "user":
            if response:
                out.append(render(template, {"System": sys_text, "Prompt": prompt, "Response": response}))
                sys_text = prompt = response = ""
            prompt = m["Content"]
        else:
            response = m["Content"]
    out.append(render(template, {"System": sys_text, "Prompt": prompt, "Response": ""}))
    return "".join(out)
