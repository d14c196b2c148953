"""`quantgrid serve --ollama` listens on Ollama's port 11434 (the server itself is not started)."""

from __future__ import annotations

import uvicorn
from typer.testing import CliRunner

from quantgrid.cli import app


def test_ollama_flag_listens_on_11434(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda _app, host, port, **kw: seen.update(host=host, port=port))
    monkeypatch.setenv("LOCAL_PYTORCH_ENABLED", "false")  # no model to load
    for args, port in ((["--ollama"], 11434), ([], 8000), (["--port", "9001"], 9001)):
        res = CliRunner().invoke(app, ["serve", "--upstream", "up=http://127.0.0.1:9/v1", *args])
        assert res.exit_code == 0, res.output
        assert seen == {"host": "127.0.0.1", "port": port}
