"""A/B arms, ratings turned into a training set, and placeholders filled from a quote provider."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from quantgrid.errors import ConfigError
from quantgrid.serve.ab import ABSplit
from quantgrid.serve.app import create_app
from quantgrid.serve.context import ContextFiller, FileProvider, HttpProvider, tickers
from quantgrid.serve.events import Delta, Done
from quantgrid.serve.settings import ServeSettings
from quantgrid.serve.upstream import UpstreamConfig

ANSWER = "AAPL trades at <PRICE> (<CHANGE> today) as of <TIMESTAMP>."


def test_ab_split_is_sticky_and_follows_the_weights():
    ab = ABSplit.parse("quantgrid=0.9,upstream:primary=0.1", ["primary"])
    picks = [ab.pick(f"user-{i}").name for i in range(5000)]
    share = picks.count("upstream:primary") / len(picks)
    assert 0.08 < share < 0.12
    assert all(ab.pick(f"user-{i}").name == picks[i] for i in range(200))  # sticky
    for bad, msg in [("quantgrid=1", "two arms"), ("quantgrid=0.5,upstream:nope=0.5", "no configured upstream"),
                     ("quantgrid=x,base=1", "positive weight"), ("quantgrid=1,quantgrid=1", "twice")]:
        with pytest.raises(ConfigError, match=msg):
            ABSplit.parse(bad, ["primary"])


def _fake_remote_model(answer: str):
    """Stands in for a remote OpenAI-compatible model that writes placeholders (the tiny base
    never does): OpenAI's streaming chat format, in three pieces that split a placeholder."""
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        pieces = [answer[:20], answer[20:27], answer[27:]]
        chunks = [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
        chunks.append({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}})
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.fixture
def quotes(tmp_path):
    path = tmp_path / "quotes.json"
    path.write_text(json.dumps({"AAPL": {"price": 189.5, "change": -1.25, "timestamp": "2026-12-01T16:00:00Z"}}))
    return path


@pytest.fixture
def app_client(tiny_base, adapters, tmp_path, quotes):
    settings = ServeSettings(base=tiny_base, adapters={"crypto": str(adapters["crypto"])},
                             upstreams=[UpstreamConfig(name="remote", base_url="http://remote/v1", max_retries=0)],
                             ab="quantgrid=0.5,upstream:remote=0.5", feedback_store=str(tmp_path / "fb.jsonl"),
                             context_provider=f"file:{quotes}")
    app = create_app(settings)
    app.state.qg.upstreams.client = _fake_remote_model(ANSWER)
    with TestClient(app) as c:
        yield c


def _user_on(arm: str) -> str:
    ab = ABSplit.parse("quantgrid=0.5,upstream:remote=0.5", ["remote"])
    return next(f"u{i}" for i in range(100) if ab.pick(f"u{i}").name == arm)


def test_ab_arms_metrics_feedback_and_training_export(app_client, tmp_path):
    chat = {"model": "quantgrid", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "What is AAPL's price?"}]}
    local_user, remote_user = _user_on("quantgrid"), _user_on("upstream:remote")
    for _ in range(2):
        r = app_client.post("/v1/chat/completions", json=chat, headers={"X-QuantGrid-User": local_user})
        assert r.headers["X-QuantGrid-Arm"] == "quantgrid" and r.headers["X-QuantGrid-Backend"] == "local"
    r = app_client.post("/v1/chat/completions", json={**chat, "user": remote_user})  # OpenAI's user field
    assert r.headers["X-QuantGrid-Arm"] == "upstream:remote"
    remote = r.json()
    # the remote answer's placeholders are filled from the quote file, and the source is cited
    text = remote["choices"][0]["message"]["content"]
    assert text.startswith("AAPL trades at 189.5 (-1.25 today) as of 2026-12-01T16:00:00Z.")
    assert "Source: file quotes.json, AAPL as of 2026-12-01T16:00:00Z" in text and "<" not in text
    metrics = app_client.get("/metrics").text
    assert 'quantgrid_ab_requests_total{arm="quantgrid"} 2.0' in metrics
    assert 'quantgrid_ab_requests_total{arm="upstream:remote"} 1.0' in metrics
    assert 'quantgrid_ab_tokens_total{arm="upstream:remote"} 9.0' in metrics
    assert 'quantgrid_ab_seconds_count{arm="quantgrid"} 2.0' in metrics

    up = app_client.post("/v1/feedback", json={"id": remote["id"], "rating": "up"}).json()
    assert up == {"id": remote["id"], "rating": "up", "arm": "upstream:remote", "stored": True}
    local = app_client.post("/v1/chat/completions", json=chat, headers={"X-QuantGrid-User": local_user})
    rid = local.headers["X-Request-Id"]
    assert app_client.post("/v1/feedback", json={"id": rid, "rating": "up"}).status_code == 200
    assert app_client.post("/v1/feedback", json={"id": rid, "rating": "down"}).status_code == 200  # changed mind
    r = app_client.post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": "up"})
    assert r.status_code == 404 and "no recent response" in r.json()["error"]["message"]
    assert app_client.post("/v1/feedback", json={"id": rid, "rating": "meh"}).status_code == 400
    assert 'quantgrid_feedback_total{arm="quantgrid",rating="down"} 1.0' in app_client.get("/metrics").text

    store = tmp_path / "fb.jsonl"
    with store.open("a") as f:
        f.write('{"rated_at": 1, "rating": "up", "exch')  # a crash mid-line
    from typer.testing import CliRunner

    from quantgrid.cli import app as cli

    out = tmp_path / "train.jsonl"
    res = CliRunner().invoke(cli, ["data", "from-feedback", str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "1 exchanges rated 'up'" in said and "1 unreadable lines skipped" in said
    records = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert records == [{"messages": [{"role": "user", "content": "What is AAPL's price?"},
                                     {"role": "assistant", "content": text}]}]
    from quantgrid.data import load_examples

    examples = load_examples(str(out))  # our own reader takes it as a training set
    assert examples[0].prompt == "What is AAPL's price?"


def test_feedback_is_not_stored_without_opt_in(tiny_base):
    with TestClient(create_app(ServeSettings(base=tiny_base))) as c:
        r = c.post("/api/generate", json={"model": "base", "prompt": "hi", "stream": False,
                                          "options": {"num_predict": 2}})
        got = c.post("/v1/feedback", json={"id": r.headers["X-Request-Id"], "rating": "up"}).json()
        assert got["stored"] is False and got["arm"] is None


def _run(filler: ContextFiller, pieces: list[str], question: str) -> str:
    """The answer text after the filler, for a stream of ``pieces``."""
    async def events():
        for p in pieces:
            yield Delta(p)
        yield Done("stop", 1, len(pieces))

    async def main() -> str:
        return "".join([ev.text async for ev in filler.wrap(events(), question) if isinstance(ev, Delta)])

    return asyncio.run(main())


@pytest.fixture
def quote_server(tmp_path):
    """A local quote endpoint in its own process: /quote?symbol=S answers JSON, 404 if unknown."""
    script = tmp_path / "quotes_server.py"
    script.write_text(textwrap.dedent('''
        import json, sys
        from http.server import BaseHTTPRequestHandler, HTTPServer
        from urllib.parse import parse_qs, urlsplit
        QUOTES = {"MSFT": {"price": 410.0, "change": 2.5, "timestamp": "2026-12-01T15:59:00Z"}}
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                sym = parse_qs(urlsplit(self.path).query).get("symbol", [""])[0]
                q = QUOTES.get(sym)
                self.send_response(200 if q else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(q or {"error": "unknown"}).encode())
            def log_message(self, *a):
                pass
        srv = HTTPServer(("127.0.0.1", 0), H)
        print(srv.server_address[1], flush=True)
        srv.serve_forever()
    '''))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/quote?symbol={{symbol}}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_http_provider_fills_split_placeholders_and_cites_it(quote_server):
    filler = ContextFiller(HttpProvider(quote_server))
    text = _run(filler, ["MSFT is at <PR", "ICE>, ", "<CHANGE>", " since <TIMES", "TAMP>"], "Price of $MSFT?")
    assert text.startswith("MSFT is at 410, +2.5 since 2026-12-01T15:59:00Z")
    assert text.endswith("(Source: 127.0.0.1:" + quote_server.split(":")[2].split("/")[0] + ", MSFT as of "
                         "2026-12-01T15:59:00Z.)")
    # an unknown ticker: said plainly, no placeholder and no number
    text = _run(filler, ["TSLA is at <PRICE>."], "What is TSLA doing?")
    assert text.startswith("TSLA is at [price not available].") and "No live value was available" in text
    # no placeholder: the answer is untouched and cites nothing
    assert _run(filler, ["a < b and ", "<b>bold</b>"], "MSFT?") == "a < b and <b>bold</b>"


def test_file_provider_reads_json_and_csv(tmp_path, quotes):
    text = _run(ContextFiller(FileProvider(str(quotes))), ["<CHANGE>"], "how did aapl and AAPL do")
    assert text.startswith("-1.25\n\n(Source: file quotes.json, AAPL")
    csv = tmp_path / "q.csv"
    csv.write_text("symbol,price,change,timestamp\nNVDA,120.5,,2026-12-01\n")
    text = _run(ContextFiller(FileProvider(str(csv))), ["NVDA <PRICE> <CHANGE>"], "How is NVDA?")
    assert text.startswith("NVDA 120.5 [change not available]") and "Source: file q.csv, NVDA as of 2026-12-01" in text
    assert tickers("Is $aapl above the P/E of IBM? I ask") == ["AAPL", "IBM"]
    with pytest.raises(ConfigError, match="does not exist"):
        FileProvider(str(tmp_path / "none.json"))
