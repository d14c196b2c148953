"""`quantgrid eval --endpoint URL --model NAME` against a real quantgrid server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

uvicorn = pytest.importorskip("uvicorn")

from quantgrid.serve.app import create_app  # noqa: E402
from quantgrid.serve.settings import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_base, adapters):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(ServeSettings(base=tiny_base, adapters={"crypto": str(adapters["crypto"])}))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    srv.should_exit = True
    thread.join(timeout=30)


def test_eval_endpoint_scores_a_served_model_with_the_generation_metrics(server, tmp_path):
    from typer.testing import CliRunner

    from quantgrid.cli import app
    from quantgrid.eval.endpoint import messages_of
    from quantgrid.eval.harness import load_benchmark

    out = tmp_path / "remote.json"
    res = CliRunner().invoke(app, ["eval", "--endpoint", server + "/v1", "--model", "quantgrid:crypto",
                                   "--benchmark", "builtin:finance-dev", "--limit", "3", "--max-new-tokens", "8",
                                   "--metric", "exact_match", "--metric", "rouge_l", "--output", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "quantgrid-endpoint-eval" and data["n_examples"] == 3 and len(data["answers"]) == 3
    assert set(data["metrics"]) == {"exact_match", "rouge_l"} and data["completion_tokens"] > 0
    # the answers are the server's own greedy answers to the same chat request
    ex = load_benchmark("builtin:finance-dev", 1)[0]
    direct = httpx.post(server + "/v1/chat/completions", timeout=60, json={
        "model": "quantgrid:crypto", "messages": messages_of(ex), "max_tokens": 8, "temperature": 0}).json()
    assert direct["choices"][0]["message"]["content"].strip().startswith(data["answers"][0])
    bad = CliRunner().invoke(app, ["eval", "--endpoint", server + "/v1", "--model", "gpt-9",
                                   "--benchmark", "builtin:finance-dev", "--limit", "1", "--metric", "exact_match"])
    assert bad.exit_code != 0 and "404" in bad.output
    bad = CliRunner().invoke(app, ["eval", "--model", "x", "--benchmark", "builtin:finance-dev"])
    assert bad.exit_code != 0 and "--endpoint" in bad.output
