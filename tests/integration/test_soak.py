"""Soak: minutes of mixed honest and hostile traffic against a real `quantgrid serve` and a real
`quantgrid hub serve` process on 127.0.0.1, from many concurrent clients.

What must hold throughout: no response is ever a 5xx; every honest request succeeds with the
answer it gets when sent alone; the health endpoints keep answering. What must hold at the
end: the server has no row, waiting request or adapter slot left behind and still answers;
the hub lost nothing (every push it answered with a submission id is there, with its blob)
and kept nothing extra (no blob that no row names, no upload temp file, no upload slot).

``QG_SOAK_SECONDS`` sets the traffic time per server (default 60). Every loop is bounded,
every client has a timeout, and nothing asserts a speed: only what happened is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

from _adapters import random_lora, save_peft_adapter  # noqa: E402
from _hub_process import QUANTGRID, HubProcess, _StoppableProcess, clean_env, cli, free_port  # noqa: E402
from test_hub_front_door import _blob_files, _headers, _read_response, _tmp_files  # noqa: E402
from test_serve import _wait_healthy  # noqa: E402

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("QG_SOAK_SECONDS", "60"))
TIMEOUT = httpx.Timeout(120.0, connect=30.0)  # generous: a slow shared machine is not a failure


# ----------------------------------------------------------------------------- bookkeeping


class Tally:
    """Every response, by (kind, status), and every broken expectation, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.failures: list[str] = []

    def expect(self, kind: str, status, allowed, detail: str = "", ok: bool = True) -> bool:
        """Record one outcome; it is a failure if it is a 5xx, not in ``allowed`` or not ``ok``."""
        good = ok and status in allowed and not (isinstance(status, int) and status >= 500)
        with self.lock:
            self.counts[(kind, status)] += 1
            if not good:
                self.failures.append(f"{kind}: got {status}, allowed {sorted(map(str, allowed))}: {detail[:400]}")
        return good

    def fail(self, kind: str, detail: str) -> None:
        with self.lock:
            self.counts[(kind, "exception")] += 1
            self.failures.append(f"{kind}: {detail[-1500:]}")

    def count(self, kind: str, status=None) -> int:
        with self.lock:
            return sum(n for (k, s), n in self.counts.items() if k == kind and (status is None or s == status))

    def table(self, title: str) -> str:
        with self.lock:
            items = sorted(self.counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
        width = max([len(k) for (k, _), _ in items] + [10])
        lines = [f"== {title}: {sum(n for _, n in items)} requests", f"{'kind':<{width}}  status  count"]
        lines += [f"{k:<{width}}  {str(s):>6}  {n:>5}" for (k, s), n in items]
        return "\n".join(lines)

    def check(self, title: str, extra: str = "") -> str:
        """Print the table (and ``extra``); fail on any broken expectation and on any 5xx."""
        table = self.table(title)
        print("\n" + table + ("\n" + extra if extra else ""))
        assert not self.failures, "\n".join(self.failures[:30]) + "\n" + table
        by_status = _sum_by_status(self.counts)
        assert not [s for s in by_status if isinstance(s, int) and s >= 500], by_status
        return table


def _sum_by_status(counts: Counter) -> Counter:
    out: Counter = Counter()
    for (_, status), n in counts.items():
        out[status] += n
    return out


def _loop(tally: Tally, name: str, deadline: float, step, *, pause: float = 0.0) -> threading.Thread:
    """A thread running ``step(i)`` until ``deadline``; an exception is a failure of ``name``."""

    def run() -> None:
        i = 0
        while time.monotonic() < deadline:
            try:
                step(i)
            except Exception:
                tally.fail(name, traceback.format_exc(limit=4))
            i += 1
            if pause:
                time.sleep(pause)

    return threading.Thread(target=run, name=name, daemon=True)


def _join(threads: list[threading.Thread], soak_deadline: float, grace: float = 300.0) -> None:
    """Wait for the client threads; one still running ``grace`` s after the soak is a failure
    (a request that never got an answer)."""
    for t in threads:
        t.join(max(0.0, soak_deadline + grace - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"client threads still running {grace:.0f} s after the soak: {stuck}"


_CLIENTS: list[httpx.Client] = []


def _client(base_url: str, local: str | None = None) -> httpx.Client:
    """An httpx client (closed after the test); ``local`` binds it to another loopback address,
    so that it has its own per-IP rate limit on the hub."""
    transport = httpx.HTTPTransport(local_address=local) if local else None
    _CLIENTS.append(httpx.Client(base_url=base_url, timeout=TIMEOUT, transport=transport))
    return _CLIENTS[-1]


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _raw(port: int, data: bytes, *, timeout: float = 60.0, local: str | None = None) -> socket.socket:
    """A plain socket to 127.0.0.1:``port`` (from loopback address ``local``) that sent ``data``."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(local, 0) if local else None)
    if data:
        s.sendall(data)
    return s


def _head_status(sock: socket.socket, timeout: float) -> int | str:
    """The status of the response head on ``sock``, or 'closed' if it hung up without one."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return "closed"
            buf += chunk
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    return int(buf.split(b"\r\n", 1)[0].split()[1])


# ----------------------------------------------------------------------------- quantgrid serve

PROMPTS = ["The stock price of", "What is bitcoin?", "Bond yields rise when"]
MODELS = ["base", "quantgrid:crypto", "quantgrid:bonds"]
ROUTES = ["completions", "chat", "generate", "ollama_chat"]
PARAMS = {"greedy": {"temperature": 0}, "seeded": {"temperature": 0.9, "top_p": 0.95, "seed": 7},
          "seed0": {"temperature": 1.0, "seed": 0}}
MAX_TOKENS = 8
NEVER_STOPS = [f"never-{i}" for i in range(16)]  # the documented cap: 16 stop sequences


class ServeProcess(_StoppableProcess):
    """``quantgrid serve ARGS`` as its own process on 127.0.0.1, logging to a file (a pipe that
    nobody reads would fill up and stall the server during a long soak)."""

    def __init__(self, log: Path, *args: str):
        self.port, self.log, self.args, self.proc = free_port(), log, args, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([QUANTGRID, "serve", *self.args, "--port", str(self.port), "--log-level",
                                      "warning"], env={**os.environ, "LOCAL_PYTORCH_ENABLED": "true"},
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(self.url, timeout=300, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"serve did not come up ({e}): {self.log.read_text()[-3000:]}") from None
        return self

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def _body(route: str, model: str, prompt: str, params: dict, stream: bool, max_tokens: int = MAX_TOKENS,
          **extra) -> tuple[str, dict]:
    if route in ("completions", "chat"):
        body = {"model": model, "max_tokens": max_tokens, **params, **extra}
        if route == "completions":
            path, body["prompt"] = "/v1/completions", prompt
        else:
            path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompt}]
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return path, body
    body = {"model": model, "stream": stream, "options": {"num_predict": max_tokens, **params, **extra}}
    if route == "generate":
        return "/api/generate", {**body, "prompt": prompt}
    return "/api/chat", {**body, "messages": [{"role": "user", "content": prompt}]}


def _answer(route: str, j: dict) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of a non-streamed answer."""
    if route == "completions":
        return j["choices"][0]["text"], j["usage"]["completion_tokens"], j["choices"][0]["finish_reason"]
    if route == "chat":
        return j["choices"][0]["message"]["content"], j["usage"]["completion_tokens"], j["choices"][0]["finish_reason"]
    assert j["done"] is True, j
    text = j["response"] if route == "generate" else j["message"]["content"]
    return text, j["eval_count"], j["done_reason"]


def _streamed(route: str, r: httpx.Response) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of a streamed answer, checking its framing."""
    parts, tokens, finish, done = [], None, None, False
    if route in ("completions", "chat"):
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for c in chunk.get("choices") or []:
                    parts.append(c["text"] if route == "completions" else (c["delta"].get("content") or ""))
                    finish = c.get("finish_reason") or finish
        assert done, "the stream ended without data: [DONE]"
    else:
        for line in r.iter_lines():
            if not line.strip():
                continue
            obj = json.loads(line)
            assert "error" not in obj, obj
            parts.append(obj["response"] if route == "generate" else obj["message"]["content"])
            if obj.get("done"):
                done, tokens, finish = True, obj["eval_count"], obj["done_reason"]
        assert done, "the NDJSON stream ended without a done object"
    return "".join(parts), tokens, finish


def _generate(http: httpx.Client, route: str, model: str, prompt: str, params: dict, stream: bool,
              **extra) -> tuple[int, tuple | None, str]:
    """(status, (text, tokens, finish) on 200, error text otherwise)."""
    path, body = _body(route, model, prompt, params, stream, **extra)
    if not stream:
        r = http.post(path, json=body)
        return (200, _answer(route, r.json()), "") if r.status_code == 200 else (r.status_code, None, r.text)
    with http.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, None, r.text
        return 200, _streamed(route, r), ""


def _openai_error(param: str | None = None):
    """A 4xx in OpenAI's error shape, naming ``param`` (in `param` or the message) when given."""

    def check(r: httpx.Response) -> bool:
        err = r.json()["error"]
        ok = isinstance(err["message"], str) and bool(err["message"]) and "type" in err
        return ok and (param is None or param in str(err.get("param")) or param in err["message"])

    return check


def _ollama_error(word: str | None = None):
    def check(r: httpx.Response) -> bool:
        err = r.json()["error"]
        return isinstance(err, str) and (word is None or word in err)

    return check


def _hostile_serve_cases(refs: dict) -> list[tuple]:
    """(kind, method, path, json body or raw bytes, allowed statuses, check of the response)."""
    p0, msgs = PROMPTS[0], [{"role": "user", "content": PROMPTS[1]}]

    def same_as(route: str, model: str, prompt: str, params: str):
        def check(r: httpx.Response) -> bool:
            return _answer(route, r.json()) == refs[(route, model, prompt, params)]
        return check

    big = "word " * 1_000_000  # 5 MB: refused before tokenizing
    deep = b"[" * 100_000 + b"]" * 100_000
    oa, ol = _openai_error, _ollama_error
    return [
        ("tiny-temperature (greedy)", "POST", "/v1/chat/completions",
         {"model": "quantgrid:crypto", "max_tokens": MAX_TOKENS, "temperature": 1e-300, "messages": msgs},
         {200}, same_as("chat", "quantgrid:crypto", PROMPTS[1], "greedy")),
        ("ollama tiny temperature", "POST", "/api/chat",
         {"model": "quantgrid:bonds", "stream": False, "messages": msgs,
          "options": {"temperature": 1e-300, "num_predict": MAX_TOKENS}},
         {200}, same_as("ollama_chat", "quantgrid:bonds", PROMPTS[1], "greedy")),
        ("seed 2**64", "POST", "/v1/completions",
         {"model": "quantgrid:crypto", "prompt": p0, "max_tokens": MAX_TOKENS, "temperature": 1.0, "seed": 2 ** 64},
         {200}, same_as("completions", "quantgrid:crypto", p0, "seed0")),
        ("seed -5", "POST", "/v1/completions",
         {"model": "base", "prompt": p0, "max_tokens": MAX_TOKENS, "temperature": 1.0, "seed": -5}, {200}, None),
        ("seed 10**40", "POST", "/v1/completions",
         {"model": "base", "prompt": p0, "max_tokens": MAX_TOKENS, "temperature": 1.0, "seed": 10 ** 40},
         {200, 400}, None),
        ("stop list at the cap", "POST", "/v1/completions",
         {"model": "quantgrid:bonds", "prompt": p0, "max_tokens": MAX_TOKENS, "temperature": 0, "stop": NEVER_STOPS},
         {200}, same_as("completions", "quantgrid:bonds", p0, "greedy")),
        ("temperature NaN", "POST", "/v1/completions",
         b'{"model": "base", "prompt": "Hi", "max_tokens": 4, "temperature": NaN}', {400}, oa("temperature")),
        ("temperature Infinity", "POST", "/v1/chat/completions",
         b'{"model": "base", "max_tokens": 4, "temperature": Infinity, '
         b'"messages": [{"role": "user", "content": "Hi"}]}', {400}, oa("temperature")),
        ("ollama temperature Infinity", "POST", "/api/generate",
         b'{"model": "quantgrid:crypto", "prompt": "Hi", "stream": false, "options": {"temperature": Infinity}}',
         {400}, ol("temperature")),
        ("ollama temperature NaN", "POST", "/api/chat",
         b'{"model": "base", "stream": false, "messages": [{"role": "user", "content": "Hi"}], '
         b'"options": {"temperature": NaN}}', {400}, ol("temperature")),
        ("temperature 5", "POST", "/v1/completions",
         {"model": "base", "prompt": p0, "temperature": 5}, {400}, oa("temperature")),
        ("temperature -1", "POST", "/v1/completions",
         {"model": "base", "prompt": p0, "temperature": -1}, {400}, oa("temperature")),
        ("top_p 0", "POST", "/v1/completions", {"model": "base", "prompt": p0, "top_p": 0}, {400}, oa("top_p")),
        ("stop x10000", "POST", "/v1/completions",
         {"model": "base", "prompt": p0, "max_tokens": 4, "stop": [f"s{i}" for i in range(10_000)]},
         {400}, oa("stop")),
        ("stop 10k chars", "POST", "/v1/chat/completions",
         {"model": "base", "messages": msgs, "max_tokens": 4, "stop": ["x" * 10_000]}, {400}, oa("stop")),
        ("ollama stop x10000", "POST", "/api/generate",
         {"model": "base", "prompt": "Hi", "stream": False, "options": {"stop": [f"s{i}" for i in range(10_000)]}},
         {400}, ol("stop")),
        ("prompt 5 MB", "POST", "/v1/completions", {"model": "base", "prompt": big, "max_tokens": 1},
         {413}, oa("characters")),
        ("prompt 65537 chars", "POST", "/v1/completions", {"model": "base", "prompt": "x" * 65_537},
         {413}, oa("characters")),
        ("chat message 5 MB", "POST", "/v1/chat/completions",
         {"model": "quantgrid:crypto", "messages": [{"role": "user", "content": big}]}, {413}, oa()),
        ("ollama prompt 5 MB", "POST", "/api/generate", {"model": "base", "prompt": big, "stream": False},
         {413}, ol()),
        ("prompt over the context", "POST", "/v1/completions",
         {"model": "base", "prompt": "word " * 12_000, "max_tokens": 1}, {400}, oa("context")),
        ("10k messages", "POST", "/v1/chat/completions",
         {"model": "base", "messages": [{"role": "user", "content": "hi"}] * 10_000}, {400, 413}, oa()),
        ("text part not a string", "POST", "/v1/chat/completions",
         {"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": 12345}]}]},
         {400}, oa()),
        ("text part an object", "POST", "/v1/chat/completions",
         {"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": {"a": [1]}}]}]},
         {400}, oa()),
        ("image part", "POST", "/v1/chat/completions",
         {"model": "base", "messages": [{"role": "user", "content": [
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, {400}, oa()),
        ("ollama content not a string", "POST", "/api/chat",
         {"model": "base", "stream": False, "messages": [{"role": "user", "content": [1, 2]}]}, {400}, ol()),
        ("tools", "POST", "/v1/chat/completions",
         {"model": "base", "messages": msgs,
          "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
         {400}, oa("tools")),
        ("ollama tools", "POST", "/api/chat",
         {"model": "base", "stream": False, "messages": msgs,
          "tools": [{"type": "function", "function": {"name": "f"}}]}, {400}, ol("tools")),
        ("unknown field", "POST", "/v1/completions", {"model": "base", "prompt": p0, "frobnicate": 1},
         {400}, oa("frobnicate")),
        ("logprobs 10000", "POST", "/v1/chat/completions",
         {"model": "base", "messages": msgs, "logprobs": True, "top_logprobs": 10_000}, {400}, oa()),
        ("n 9", "POST", "/v1/completions", {"model": "base", "prompt": p0, "n": 9}, {400}, oa("n")),
        ("max_tokens 0", "POST", "/v1/completions", {"model": "base", "prompt": p0, "max_tokens": 0},
         {400}, oa("max_tokens")),
        ("max_tokens a string", "POST", "/v1/completions", {"model": "base", "prompt": p0, "max_tokens": "many"},
         {400}, oa("max_tokens")),
        ("messages empty", "POST", "/v1/chat/completions", {"model": "base", "messages": []}, {400}, oa()),
        ("role tool", "POST", "/v1/chat/completions",
         {"model": "base", "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, {400}, oa()),
        ("no messages", "POST", "/v1/chat/completions", {"model": "base"}, {400}, oa("messages")),
        ("unknown model", "POST", "/v1/completions", {"model": "no-such-model", "prompt": p0}, {404}, oa()),
        ("not JSON", "POST", "/v1/completions", b"{not json", {400}, oa()),
        ("JSON array", "POST", "/v1/chat/completions", b"[]", {400}, oa()),
        ("JSON string", "POST", "/v1/completions", b'"hi"', {400}, oa()),
        ("empty body", "POST", "/v1/completions", b"", {400}, oa()),
        ("invalid UTF-8", "POST", "/v1/completions", b'{"model": "base", "prompt": "\xff\xfe\xfa"}', {400}, oa()),
        ("lone surrogate", "POST", "/v1/completions",
         b'{"model": "base", "prompt": "a\\ud800b", "max_tokens": 2}', {200, 400}, None),
        ("NUL bytes", "POST", "/v1/completions",
         {"model": "base", "prompt": "\x00" * 1000, "max_tokens": 2}, {200, 400}, None),
        ("nested 100k deep", "POST", "/v1/completions",
         b'{"model": "base", "prompt": "x", "metadata": ' + deep + b"}", {400}, oa()),
        ("ollama nested 100k deep", "POST", "/api/generate",
         b'{"model": "base", "prompt": "x", "stream": false, "options": ' + deep + b"}", {400}, ol()),
        ("ollama format json", "POST", "/api/generate",
         {"model": "base", "prompt": "Hi", "stream": False, "format": "json"}, {400}, ol("format")),
        ("ollama top_k", "POST", "/api/generate",
         {"model": "base", "prompt": "Hi", "stream": False, "options": {"top_k": 40}}, {400}, ol("top_k")),
        ("ollama images", "POST", "/api/generate",
         {"model": "base", "prompt": "Hi", "stream": False, "images": ["AAAA"]}, {400}, ol("images")),
        ("wrong method", "GET", "/v1/completions", None, {405}, oa()),
        ("unknown route", "GET", "/v1/nothing/here", None, {404}, oa()),
    ]


def _serve_hostile_step(http: httpx.Client, tally: Tally, cases: list[tuple], i: int) -> None:
    kind, method, path, body, allowed, check = cases[i % len(cases)]
    if body is None:
        r = http.request(method, path)
    elif isinstance(body, bytes):
        r = http.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = http.request(method, path, json=body)
    ok, detail = True, r.text
    if check is not None and r.status_code in allowed:
        try:
            ok = bool(check(r))
        except Exception as e:  # a body not in the documented shape
            ok, detail = False, f"{e!r}: {r.text}"
    tally.expect(f"hostile {kind}", r.status_code, allowed, detail, ok=ok)


def _disconnect_step(port: int, tally: Tally, started: list[int], i: int) -> None:
    """Clients that go away: mid-stream, mid-request, mid-body. Streams whose first token
    arrived are counted in ``started``: each of those rows must end up cancelled."""
    how = ["openai stream", "ollama stream", "openai no-stream", "openai stream n=2", "ollama no-stream",
           "half body"][i % 6]
    model = MODELS[1 + i % 2]
    if how.startswith("openai stream"):
        body = json.dumps({"model": model, "prompt": PROMPTS[0], "max_tokens": 100_000, "temperature": 0.5,
                           "seed": i, "stream": True, "n": 2 if how.endswith("n=2") else 1}).encode()
        path, marker = "/v1/completions", b"data: {"
    elif how.startswith("ollama"):
        stream = how == "ollama stream"
        body = json.dumps({"model": model, "prompt": PROMPTS[2], "stream": stream,
                           "options": {"num_predict": 100_000, "temperature": 0}}).encode()
        path, marker = "/api/generate", b'"response"' if stream else None
    else:
        body = json.dumps({"model": model, "max_tokens": 100_000, "temperature": 0,
                           "messages": [{"role": "user", "content": PROMPTS[1]}]}).encode()
        path, marker = "/v1/chat/completions", None
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    if how == "half body":
        with _raw(port, head + body[: len(body) // 2]) as s:
            time.sleep(0.3)
        tally.expect(f"disconnect {how}", "sent", {"sent"})
        return
    with _raw(port, head + body) as s:
        if marker is None:
            time.sleep(0.5)  # the row is queued or decoding; then the client is gone
            tally.expect(f"disconnect {how}", "sent", {"sent"})
            return
        s.settimeout(60)
        buf = b""
        while marker not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        status = int(buf.split(b"\r\n", 1)[0].split()[1]) if buf.startswith(b"HTTP/1.1") else "closed"
        if tally.expect(f"disconnect {how}", status, {200}, buf[:300].decode(errors="replace"),
                        ok=marker in buf):
            with tally.lock:
                started.append(1)


def _drained(http: httpx.Client, limit: float = 60.0) -> dict:
    """/health once the engine has no active or waiting request (an answer can reach its client
    a moment before its row is retired, so this polls, bounded)."""
    deadline = time.monotonic() + limit
    while True:
        h = http.get("/health").json()
        if h["engine"]["active"] == 0 and h["engine"]["waiting"] == 0:
            return h
        assert time.monotonic() < deadline, f"the engine never drained: {h['engine']}"
        time.sleep(0.2)


def _metric(text: str, name: str) -> float:
    vals = [float(line.split()[-1]) for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")]
    assert vals, f"{name} is not in /metrics"
    return sum(vals)


@pytest.fixture(scope="module")
def serve_adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soak-adapters")
    return {"crypto": save_peft_adapter(tiny_base, root / "crypto", 2, 8, ["o_proj"], "Crypto: bitcoin, funding"),
            "bonds": save_peft_adapter(tiny_base, root / "bonds", 3, 4, ["q_proj", "v_proj"], "Bonds: yield")}


def test_serve_soak(tiny_base, serve_adapters, tmp_path):
    # One adapter slot for two adapters: each request swaps them, so a slot that is not given
    # back blocks every request for the other adapter (the final requests would hang).
    srv = ServeProcess(tmp_path / "serve.log", "--base", tiny_base, "--adapter", f"crypto={serve_adapters['crypto']}",
                       "--adapter", f"bonds={serve_adapters['bonds']}", "--max-slots", "1", "--max-batch", "4",
                       "--default-max-tokens", "32").start()
    tally = Tally()
    try:
        # References: every honest (route, model, prompt, params) sent alone, before any load.
        refs: dict[tuple, tuple] = {}
        with _client(srv.url) as http:
            for route in ROUTES:
                for model in MODELS:
                    for prompt in PROMPTS:
                        for pname in ("greedy", "seeded") + (("seed0",) if route == "completions" else ()):
                            status, ans, err = _generate(http, route, model, prompt, PARAMS[pname], False)
                            assert status == 200, (route, model, prompt, pname, status, err)
                            text, tokens, finish = ans
                            assert tokens >= 1 and text.strip() and finish in ("stop", "length"), ans
                            refs[(route, model, prompt, pname)] = ans
            m0 = http.get("/metrics").text
        base_cancelled, base_failed = (_metric(m0, "quantgrid_engine_requests_cancelled"),
                                       _metric(m0, "quantgrid_engine_requests_failed"))
        assert base_failed == 0

        deadline = time.monotonic() + SOAK_SECONDS
        cases = _hostile_serve_cases(refs)
        started: list[int] = []
        rng = random.Random(0)
        threads = []

        def honest(seed: int):
            local = random.Random(seed)
            http = _client(srv.url)

            def step(i: int) -> None:
                route, model, prompt = local.choice(ROUTES), local.choice(MODELS), local.choice(PROMPTS)
                pname, stream = local.choice(["greedy", "seeded"]), local.random() < 0.5
                kind = f"honest {route}{' stream' if stream else ''}"
                extra = {"stop": NEVER_STOPS} if route in ("completions", "chat") and local.random() < 0.2 else {}
                status, ans, err = _generate(http, route, model, prompt, PARAMS[pname], stream, **extra)
                want = refs[(route, model, prompt, pname)]
                tally.expect(kind, status, {200}, f"{model} {prompt!r} {pname}: {err or ans} != {want}",
                             ok=ans == want)

            return _loop(tally, f"honest-{seed}", deadline, step)

        threads += [honest(s) for s in range(4)]
        hostile_http = [_client(srv.url) for _ in range(2)]
        order = list(range(len(cases)))
        rng.shuffle(order)
        threads += [_loop(tally, f"hostile-{k}", deadline,
                          lambda i, k=k: _serve_hostile_step(hostile_http[k], tally, cases, order[(i * 2 + k) % len(order)]))
                    for k in range(2)]
        threads.append(_loop(tally, "disconnects", deadline, lambda i: _disconnect_step(srv.port, tally, started, i),
                             pause=0.2))
        probe = _client(srv.url)

        def health(i: int) -> None:
            r = probe.get("/health", timeout=30)
            tally.expect("health", r.status_code, {200}, r.text, ok=r.status_code == 200 and r.json()["status"] == "ok")
            if i % 5 == 0:
                r = probe.get("/metrics", timeout=30)
                tally.expect("metrics", r.status_code, {200}, r.text[:200],
                             ok="quantgrid_engine_active_requests" in r.text)

        threads.append(_loop(tally, "health", deadline, health, pause=0.5))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        _join(threads, deadline)
        elapsed = time.monotonic() - t0

        # Afterwards: nothing running, nothing waiting, no failed row, every started stream cancelled.
        with _client(srv.url) as http:
            _drained(http)
            m1 = http.get("/metrics").text
            cancelled = _metric(m1, "quantgrid_engine_requests_cancelled") - base_cancelled
            failed = _metric(m1, "quantgrid_engine_requests_failed")
            errors_5xx = [ln for ln in m1.splitlines()
                          if ln.startswith("quantgrid_request_errors_total") and 'status="5' in ln]
            # No slot leaked: alternate the two adapters through the one slot, each answer as alone.
            for k in range(6):
                route, model = ROUTES[k % 4], MODELS[1 + k % 2]
                status, ans, err = _generate(http, route, model, PROMPTS[k % 3], PARAMS["greedy"], False)
                tally.expect("final honest", status, {200}, err, ok=ans == refs[(route, model, PROMPTS[k % 3], "greedy")])
            final = _drained(http)
    finally:
        srv.stop()
    table = tally.check(f"quantgrid serve soak, {elapsed:.0f} s of traffic",
                        f"streams cut after their first token: {len(started)}, rows cancelled: {cancelled:.0f}, "
                        f"engine failures: {failed:.0f}, final engine: {final['engine']}")
    assert tally.count("health", 200) >= 3 and tally.count("hostile tiny-temperature (greedy)") >= 1, table
    assert sum(tally.count(f"honest {r}") for r in ROUTES) >= 8, table
    assert failed == 0 and not errors_5xx, (failed, errors_5xx)
    assert started and cancelled >= len(started), (len(started), cancelled)
    assert final["status"] == "ok" and final["engine"]["active"] == 0 and final["engine"]["waiting"] == 0
    _assert_clean_log(srv.log, "quantgrid serve")


# ----------------------------------------------------------------------------- quantgrid hub serve

HUB_ENV = {"QUANTGRID_HUB_RATE_LIMIT_PER_MINUTE": "120", "QUANTGRID_HUB_RATE_LIMIT_BURST": "60",
           "QUANTGRID_HUB_DAILY_SUBMISSION_LIMIT": "20", "QUANTGRID_HUB_UPLOAD_READ_TIMEOUT_SECONDS": "4",
           "QUANTGRID_HUB_MAX_UPLOAD_BYTES": str(4 << 20)}
DAILY = 20
PAGES = ["/", "/releases", "/recipe", "/login", "/contributors/h0", "/v1/leaderboard", "/v1/adapters",
         "/v1/releases", "/v1/recipe", "/v1/registry.yaml", "/v1/releases/latest", "/v1/health", "/docs"]
# Clients with their own loopback address get their own per-IP (anonymous) rate limit, as
# clients on different machines would: the hostile anonymous traffic does not share an IP
# with the health probe, the polite reader or the honest contributors (127.0.0.1).
PROBE_IP, READER_IP, SCRAPER_IP, HOSTILE_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


def _garbage(tag: str) -> bytes:
    """Bytes that look like a zip to the front door (the worker would reject them)."""
    return b"PK\x03\x04" + f"soak {tag} ".encode() * 200 + os.urandom(64)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _push(http: httpx.Client, token: str | None, data: bytes, *, key: str | None = None, sha: str | None = None,
          filename: str | None = None) -> httpx.Response:
    headers = {"X-Content-SHA256": sha or _sha(data), "Content-Type": "application/zip"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    if filename:
        headers["X-Filename"] = filename
    return http.post("/v1/submissions", content=data, headers=headers)


def _slots(db, user_id: int) -> int:
    from sqlalchemy import func, select

    from quantgrid.hub.server.models import UploadSlot

    with db.read() as s:
        return s.scalar(select(func.count()).select_from(UploadSlot).where(UploadSlot.user_id == user_id)) or 0


def _wait(cond, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def honest_zips(tiny_base, tmp_path_factory) -> dict[str, list[tuple[Path, bytes, str]]]:
    """Real submission packages (`quantgrid package` of a random LoRA on the tiny base) for
    each honest user: one adapter each, packaged with a different dataset description per push."""
    from quantgrid.hub.submit import package

    root = tmp_path_factory.mktemp("soak-zips")
    out: dict[str, list] = {}
    for n, (user, count) in enumerate({"h0": 12, "h1": 12, "h2": 12, "hcli": 3}.items()):
        adapter = random_lora(tiny_base, root / f"adapter-{user}", seed=100 + n)
        out[user] = []
        for j in range(count):
            z = package(adapter, user, f"soak data of {user}, part {j}", root / f"{user}-{j}", quiet=True)
            data = z.path.read_bytes()
            assert _sha(data) == z.sha256
            out[user].append((z.path, data, z.sha256))
    return out


def test_hub_soak(honest_zips, tmp_path):
    from sqlalchemy import select

    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.models import Blob, Submission, UploadSlot, User

    hub = HubProcess(tmp_path / "storage", args=("--no-worker", "--release-schedule", "off"), env=HUB_ENV).start()
    names = ["h0", "h1", "h2", "hcli", "junk", "hog", "staller", "hostile", "flooder", "copycat", "revoked"]
    tokens = {n: hub.add_user(n) for n in names}
    hub.admin("user", "revoke", "revoked")
    db = Database(hub.db_url, migrate=False)
    with db.read() as s:
        uid = {u.name: u.id for u in s.scalars(select(User))}
    tally = Tally()
    lock = threading.Lock()
    accepted: dict[str, dict[int, str]] = {n: {} for n in names}  # user -> {submission id: sha256} answered 2xx
    junk_statuses: list[int] = []
    deadline = time.monotonic() + SOAK_SECONDS
    t_start = time.monotonic()

    def keep(user: str, r: httpx.Response, sha: str) -> int:
        j = r.json()
        assert j["sha256"] == sha and isinstance(j["id"], int), j
        with lock:
            accepted[user][j["id"]] = sha
        return j["id"]

    try:
        threads = []

        # ---- honest contributors over HTTP: push, re-push (same key and new key), a doubled push, status
        def honest(user: str):
            http, zips = _client(hub.url), honest_zips[user]
            pace = SOAK_SECONDS / (len(zips) + 1)
            tok = tokens[user]

            def step(i: int) -> None:
                if i >= len(zips):
                    time.sleep(0.5)
                    return
                _wait_until(t_start + i * pace, deadline)
                path, data, sha = zips[i]
                key = str(uuid.uuid4())
                if i % 4 == 3:  # the same push twice at once (same key): one submission, one id
                    with ThreadPoolExecutor(2) as pool:
                        rs = list(pool.map(lambda _: _push(http, tok, data, key=key, filename=path.name), range(2)))
                    codes = sorted(r.status_code for r in rs)
                    ok = codes == [200, 201] and len({r.json()["id"] for r in rs}) == 1
                    for r in rs:
                        tally.expect("honest doubled push", r.status_code, {200, 201}, r.text, ok=ok)
                    if ok:
                        keep(user, rs[0], sha)
                    return
                r = _push(http, tok, data, key=key, filename=path.name)
                j = r.json()
                if not tally.expect("honest push", r.status_code, {201}, r.text,
                                    ok=r.status_code == 201 and j["status"] == "queued" and not j["duplicate"]):
                    return
                sub_id = keep(user, r, sha)
                again = _push(http, tok, data, key=key if i % 2 else str(uuid.uuid4()))
                tally.expect("honest re-push", again.status_code, {200}, again.text,
                             ok=again.status_code == 200 and again.json()["id"] == sub_id and again.json()["duplicate"])
                st = http.get(f"/v1/submissions/{sub_id}", headers={"Authorization": f"Bearer {tok}"})
                tally.expect("honest status", st.status_code, {200}, st.text,
                             ok=st.status_code == 200 and st.json()["sha256"] == sha)

            return _loop(tally, f"honest-{user}", deadline, step)

        threads += [honest(u) for u in ("h0", "h1", "h2")]

        # ---- an honest contributor with the real CLI
        def cli_step(i: int) -> None:
            zips = honest_zips["hcli"]
            if i > len(zips):
                time.sleep(0.5)
                return
            _wait_until(t_start + i * SOAK_SECONDS / (len(zips) + 2), deadline)
            env = clean_env(tmp_path / "cli-cfg", QUANTGRID_HUB=hub.url, QUANTGRID_TOKEN=tokens["hcli"])
            path, _, sha = zips[i % len(zips)]
            r = cli(env, "push", str(path), "--json", timeout=300)
            out = json.loads(r.stdout) if r.returncode == 0 else {}
            if i < len(zips):
                if tally.expect("honest cli push", r.returncode, {0}, r.stderr,
                                ok=out.get("sha256") == sha and not out.get("duplicate")):
                    with lock:
                        accepted["hcli"][out["id"]] = sha
            else:  # the first zip again: the same submission
                tally.expect("honest cli re-push", r.returncode, {0}, r.stderr,
                             ok=out.get("duplicate") is True and out.get("id") in accepted["hcli"])

        threads.append(_loop(tally, "cli", deadline, cli_step))

        # ---- health probe and a polite reader, each from its own loopback address
        probe = _client(hub.url, PROBE_IP)

        def health(i: int) -> None:
            r = probe.get("/v1/health", timeout=30)
            tally.expect("health", r.status_code, {200}, r.text, ok=r.status_code == 200 and r.json()["status"] == "ok")

        threads.append(_loop(tally, "health", deadline, health, pause=0.5))
        reader = _client(hub.url, READER_IP)

        def read(i: int) -> None:
            page = PAGES[i % len(PAGES)]
            r = reader.get(page)
            allowed = {200, 404} if page == "/v1/releases/latest" else {200}
            tally.expect("reader pages", r.status_code, allowed, f"{page}: {r.text[:200]}",
                         ok=r.status_code == 404 or ("<html" in r.text.lower() or page.startswith("/v1/")))

        threads.append(_loop(tally, "reader", deadline, read, pause=1.0))  # under the per-IP rate
        scrapers = [_client(hub.url, SCRAPER_IP) for _ in range(2)]

        def scrape(k: int, i: int) -> None:
            page = PAGES[(i + k) % len(PAGES)]
            r = scrapers[k].get(page)
            tally.expect("scraper pages", r.status_code, {200, 404, 429}, f"{page}: {r.text[:200]}")

        threads += [_loop(tally, f"scraper-{k}", deadline, lambda i, k=k: scrape(k, i), pause=0.05) for k in range(2)]

        # ---- garbage pushed by one user, one at a time: exactly the daily limit gets in
        junk_http = _client(hub.url)

        def junk(i: int) -> None:
            if i >= DAILY + 4:
                time.sleep(0.5)
                return
            _wait_until(t_start + i * SOAK_SECONDS / (DAILY + 6), deadline)
            data = _garbage(f"junk {i}")
            r = _push(junk_http, tokens["junk"], data, key=str(uuid.uuid4()))
            junk_statuses.append(r.status_code)
            if tally.expect("junk push", r.status_code, {201, 429}, r.text) and r.status_code == 201:
                keep("junk", r, _sha(data))

        threads.append(_loop(tally, "junk", deadline, junk))

        # ---- two uploads held open by one user: the third is refused; dropping them frees the slots
        hog_http = _client(hub.url)

        def hog(i: int) -> None:
            if i >= 6:
                time.sleep(0.5)
                return
            data = _garbage(f"hog {i}")
            held = [_raw(hub.port, _headers(_sha(data), len(data), token=tokens["hog"], key=f"hog-{i}-{k}")
                         + data[:100]) for k in range(2)]
            stop = threading.Event()

            def trickle() -> None:  # a byte now and then keeps both uploads under the read timeout
                n = 100
                while not stop.wait(0.5) and n < 1000:
                    for s in held:
                        s.sendall(data[n:n + 1])
                    n += 1

            dripper = threading.Thread(target=trickle, daemon=True)
            dripper.start()
            try:
                _wait(lambda: _slots(db, uid["hog"]) == 2, "the hog's two upload slots")
                third = _garbage(f"hog third {i}")
                r = _push(hog_http, tokens["hog"], third)
                if tally.expect("hog third upload", r.status_code, {429}, r.text,
                                ok="in progress" in r.text and int(r.headers.get("retry-after", "0")) >= 1) is False \
                        and r.status_code in (200, 201):
                    keep("hog", r, _sha(third))
            finally:
                stop.set()
                dripper.join(10)
                for s in held:
                    s.close()
            _wait(lambda: _slots(db, uid["hog"]) == 0, "the dropped uploads' slots to be freed")
            r = _push(hog_http, tokens["hog"], data)  # the same bytes, now sent whole
            if tally.expect("hog push after drop", r.status_code, {201}, r.text):
                keep("hog", r, _sha(data))
            time.sleep(SOAK_SECONDS / 8)

        threads.append(_loop(tally, "hog", deadline, hog))

        # ---- stalled authenticated uploads: cut off with 408, no file left
        def stall(i: int) -> None:
            data = b"PK\x03\x04" + os.urandom(200_000)
            with _raw(hub.port, _headers(_sha(data), len(data), token=tokens["staller"]) + data[:1000]) as s:
                status, _, closed = _read_response(s, timeout=60)
            tally.expect("stalled upload", status, {408}, "", ok=closed)

        threads.append(_loop(tally, "staller", deadline, stall, pause=1.0))

        # ---- hostile odds and ends
        hostile_http, anon = _client(hub.url, HOSTILE_IP), _client(hub.url, HOSTILE_IP)
        htok = tokens["hostile"]
        key_abuse: list[int] = []

        def hostile(i: int) -> None:
            which = i % 18
            data = _garbage(f"hostile {i}")
            if which == 0:
                r = _push(anon, None, data)
                tally.expect("anonymous push", r.status_code, {401, 429}, r.text,
                             ok="www-authenticate" in r.headers or r.status_code == 429)
            elif which == 1:
                r = _push(anon, "qg_forged_" + uuid.uuid4().hex, data)
                tally.expect("forged-token push", r.status_code, {401, 429}, r.text)
            elif which == 2:
                r = anon.get("/v1/me", headers={"Authorization": f"Bearer {tokens['revoked']}"})
                tally.expect("revoked token", r.status_code, {401, 429}, r.text)
            elif which == 3:
                for auth in ("Bearer", "Basic Zm9vOmJhcg==", "Bearer a b c"):
                    r = anon.get("/v1/me", headers={"Authorization": auth})
                    tally.expect("malformed authorization", r.status_code, {401, 429}, r.text)
            elif which == 4 and i % 36 == 22:  # fifty anonymous uploads left half-sent at once
                socks = [_raw(hub.port, _headers("0" * 64, 60 << 20) + b"PK", local=HOSTILE_IP) for _ in range(50)]
                try:
                    r = probe.get("/v1/health", timeout=30)
                    tally.expect("health while 50 half-sent", r.status_code, {200}, r.text)
                    for s in socks[:5]:
                        status, _, closed = _read_response(s, timeout=10)
                        tally.expect("anonymous half-sent x50", status, {401, 429}, "", ok=closed)
                finally:
                    for s in socks:
                        s.close()
            elif which == 4:  # anonymous, 60 MB declared, trickled
                with _raw(hub.port, _headers("0" * 64, 60 << 20) + b"PK\x03\x04", local=HOSTILE_IP) as s:
                    status, _, closed = _read_response(s, timeout=10)
                tally.expect("anonymous trickle", status, {401, 429}, "", ok=closed)
            elif which == 5:  # a declared size over the limit
                with _raw(hub.port, _headers("0" * 64, (4 << 20) + 1, token=htok) + b"PK", local=HOSTILE_IP) as s:
                    status, _, _ = _read_response(s, timeout=10)
                tally.expect("oversize declared", status, {413, 429}, "")
            elif which == 6:
                r = _push(hostile_http, htok, data, sha="ab" * 32)
                tally.expect("sha256 mismatch", r.status_code, {422, 429}, r.text)
            elif which == 7:
                r = _push(hostile_http, htok, data, sha="not-a-sha")
                tally.expect("malformed sha256", r.status_code, {400, 422, 429}, r.text)
            elif which == 8:  # chunked, no Content-Length
                head = (f"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {htok}\r\n"
                        f"X-Content-SHA256: {_sha(data)}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
                with _raw(hub.port, head + b"10\r\n" + b"y" * 16 + b"\r\n", local=HOSTILE_IP) as s:
                    status = _head_status(s, 30)
                tally.expect("chunked upload", status, {422, 429, "closed"}, "")
            elif which == 9:  # half the body, then gone
                with _raw(hub.port, _headers(_sha(data), len(data), token=htok) + data[: len(data) // 2], local=HOSTILE_IP):
                    time.sleep(0.2)
                tally.expect("half body then close", "sent", {"sent"})
            elif which == 10 and len(key_abuse) < 4:  # one key, two different files
                key = str(uuid.uuid4())
                r = _push(hostile_http, htok, data, key=key)
                if tally.expect("idempotency key first use", r.status_code, {201, 429}, r.text) \
                        and r.status_code == 201:
                    keep("hostile", r, _sha(data))
                    key_abuse.append(1)
                    r = _push(hostile_http, htok, _garbage(f"other {i}"), key=key)
                    tally.expect("idempotency key reused", r.status_code, {422, 429}, r.text,
                                 ok=r.status_code == 429 or "already used" in r.text)
            elif which == 11:  # someone else's submission: the same 404 as a missing one
                with lock:
                    theirs = next(iter(accepted["h0"]), None)
                if theirs is not None:
                    r = hostile_http.get(f"/v1/submissions/{theirs}", headers={"Authorization": f"Bearer {htok}"})
                    tally.expect("peek at another's submission", r.status_code, {404, 429}, r.text)
            elif which == 12:
                for bad in ("0", "abc", str(2 ** 70), "99999999"):
                    r = hostile_http.get(f"/v1/submissions/{bad}", headers={"Authorization": f"Bearer {htok}"})
                    tally.expect("bad submission id", r.status_code, {404, 422, 429}, r.text)
            elif which == 13:
                r = anon.get("/submissions/1")
                tally.expect("web submission anonymous", r.status_code, {302, 303, 307, 429}, r.text)
                r = anon.post("/login", data={"token": "qg_forged", "csrf": "x"})
                tally.expect("web login forged", r.status_code, {302, 303, 400, 403, 422, 429}, r.text)
                r = anon.post("/adapters/1/upvote", data={"csrf": "x"})
                tally.expect("web upvote no csrf", r.status_code, {302, 303, 400, 403, 422, 429}, r.text)
            elif which == 14:
                r = hostile_http.post("/v1/adapters/999/upvote", headers={"Authorization": f"Bearer {htok}"})
                tally.expect("upvote missing adapter", r.status_code, {404, 429}, r.text)
                r = anon.get("/v1/releases/..%2f..%2fetc%2fpasswd/download")
                tally.expect("release path traversal", r.status_code, {400, 404, 422, 429}, r.text)
            elif which == 15:  # a header block far over the 64 KiB bound: refused, the connection closed
                head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 200_000 + b"\r\n\r\n"
                try:
                    with _raw(hub.port, head, local=HOSTILE_IP) as s:
                        status = _head_status(s, 30)
                except (ConnectionResetError, BrokenPipeError):
                    status = "closed"
                tally.expect("huge header", status, {400, "closed"}, "")
            elif which == 16:  # a zip pushed over and over with fresh keys: one submission
                with lock:
                    mine = next(iter(accepted["hostile"].items()), None)
                if mine is not None:
                    blob = next(p for p in _blob_files(hub) if p.name == mine[1]).read_bytes()
                    r = _push(hostile_http, htok, blob, key=str(uuid.uuid4()))
                    tally.expect("hostile re-push", r.status_code, {200, 429}, r.text,
                                 ok=r.status_code == 429 or r.json()["id"] == mine[0])
            elif which == 17:
                r = hostile_http.post("/v1/submissions", content=b"", headers={
                    "Authorization": f"Bearer {htok}", "X-Content-SHA256": _sha(b"")})
                tally.expect("empty upload", r.status_code, {422, 429}, r.text)

        threads.append(_loop(tally, "hostile", deadline, hostile, pause=0.5))  # about the user's rate limit

        # ---- one user bursting far past the rate limit (halfway through), and a copycat
        flood_seen: list[int] = []

        def flood(i: int) -> None:
            if i > 0:
                time.sleep(0.5)
                return
            _wait_until(t_start + SOAK_SECONDS / 2, deadline)
            http = _client(hub.url)
            hdr = {"Authorization": f"Bearer {tokens['flooder']}"}

            def one(_):
                r = http.get("/v1/me", headers=hdr)
                retry = int(r.headers.get("retry-after", "0"))
                tally.expect("flood", r.status_code, {200, 429}, r.text, ok=r.status_code == 200 or retry >= 1)
                return r.status_code

            with ThreadPoolExecutor(6) as pool:
                for _ in range(4):  # until the limiter has answered 429 (bounded)
                    flood_seen.extend(pool.map(one, range(100)))
                    if 429 in flood_seen:
                        break

        threads.append(_loop(tally, "flood", deadline, flood))
        copy_http = _client(hub.url)

        def copycat(i: int) -> None:
            _wait_until(t_start + (i + 1) * SOAK_SECONDS / 10, deadline)
            with lock:
                theirs = sorted(accepted["h1"].values())
            if i >= 8 or not theirs:
                return
            sha = theirs[i % len(theirs)]
            data = next(d for _, d, s in honest_zips["h1"] if s == sha)
            r = _push(copy_http, tokens["copycat"], data)
            if tally.expect("copycat push", r.status_code, {200, 201}, r.text):
                keep("copycat", r, sha)

        threads.append(_loop(tally, "copycat", deadline, copycat))

        for t in threads:
            t.start()
        _join(threads, deadline)
        elapsed = time.monotonic() - t_start

        # ---------------- afterwards: nothing in flight, nothing lost, nothing left over
        _wait(lambda: not _tmp_files(hub), "upload temp files to be removed")
        with db.read() as s:
            assert s.scalars(select(UploadSlot)).all() == [], "upload slots left behind"
        assert hub.proc.poll() is None, "the hub died"
        health = probe.get("/v1/health").json()
        for user, subs in accepted.items():
            if not subs:
                continue
            listed = {j["id"]: j["sha256"] for j in _get_ok(hub.url, "/v1/submissions?limit=1000",
                                                            tokens[user])["items"]}
            assert listed == subs, f"{user}'s submissions: the hub lists {listed}, it answered {subs}"
            for sub_id, sha in subs.items():
                j = _get_ok(hub.url, f"/v1/submissions/{sub_id}", tokens[user])
                assert j["id"] == sub_id and j["sha256"] == sha and j["status"] == "queued", j
        with db.read() as s:
            rows = s.scalars(select(Submission)).all()
            blob_rows = {b.sha256: b.size_bytes for b in s.scalars(select(Blob))}
            sub_rows = {(r.user_id, r.id): r.blob_sha256 for r in rows}
        answered = {(uid[u], i): sha for u, subs in accepted.items() for i, sha in subs.items()}
        assert sub_rows == answered, "the hub holds submissions it never answered with, or lost one"
        files = {p.name: p for p in _blob_files(hub)}
        assert set(files) == set(blob_rows) == set(answered.values()), \
            (f"orphan blobs {sorted(set(files) - set(blob_rows))}, missing blobs {sorted(set(blob_rows) - set(files))}")
        for name, p in files.items():
            data = p.read_bytes()
            assert _sha(data) == name and len(data) == blob_rows[name], f"blob {name} is not what was pushed"
        leftovers = [p for p in hub.storage.rglob("*") if p.is_file() and (
            p.name.endswith((".tmp", ".partial")) or p.parent.name == "tmp")]
        assert leftovers == [], leftovers
        assert health["queue"] == {"queued": len(sub_rows)}, health
    finally:
        db.dispose()
        hub.stop()
    table = tally.check(f"quantgrid hub serve soak, {elapsed:.0f} s of traffic",
                        f"submissions: {len(sub_rows)} ({sum(len(accepted[u]) for u in ('h0', 'h1', 'h2', 'hcli'))} "
                        f"honest), blobs: {len(files)}, junk statuses: {Counter(junk_statuses)}, "
                        f"flood: {Counter(flood_seen)}")
    # Sent one at a time, exactly the daily limit of the junk got in, then 429 for the rest.
    assert junk_statuses == [201] * min(len(junk_statuses), DAILY) + [429] * max(0, len(junk_statuses) - DAILY)
    assert 429 in flood_seen, "a client far past the rate limit was never throttled"
    assert tally.count("health", 200) >= 3 and tally.count("stalled upload", 408) >= 1, table
    for user in ("h0", "h1", "h2"):
        assert len(accepted[user]) >= 2, f"{user} got few pushes in: {accepted[user]}"
    _assert_clean_log(hub.log, "quantgrid hub serve")


def _wait_until(t: float, deadline: float) -> None:
    """Sleep until monotonic time ``t`` (not past the soak's deadline)."""
    with contextlib.suppress(ValueError):
        time.sleep(max(0.0, min(t, deadline) - time.monotonic()))


def _get_ok(url: str, path: str, token: str) -> dict:
    """GET as ``token``'s user, waiting out a 429 (a hostile user may still be in rate-limit debt)."""
    deadline = time.monotonic() + 90
    while True:
        r = httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        if r.status_code != 429 or time.monotonic() > deadline:
            assert r.status_code == 200, (path, r.status_code, r.text)
            return r.json()
        time.sleep(min(5, int(r.headers.get("retry-after", "1"))))


def _assert_clean_log(path: Path, what: str) -> None:
    """No unhandled exception in the server's log: each one is a request the server answered
    with a 500 (or would have, had its client still been there)."""
    log = path.read_text(errors="replace")
    lines = Counter(re.sub(r"(0x)?[0-9a-f]{10,}|Task-\d+", "…", line) for line in log.splitlines()
                    if re.match(r"^(\w+\.)*\w*(Error|Exception|Disconnect)\b", line)
                    or "unhandled error" in line or "exception was never retrieved" in line)
    tracebacks = log.count("Traceback (most recent call last)")
    assert tracebacks == 0, (f"{what} logged {tracebacks} tracebacks; their distinct lines:\n"
                             + "\n".join(f"{n:>5} x {line[:200]}" for line, n in lines.most_common(12))
                             + f"\n(the whole log: {path})")
