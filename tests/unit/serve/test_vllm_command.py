"""vLLM command builder and deploy loop, without vLLM: adapter directories are configs on disk,
and a real HTTP server on 127.0.0.1 plays vLLM's /v1/models, load and unload routes."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantgrid.adapter import BaseShape
from quantgrid.cli import app
from quantgrid.errors import AdapterMismatchError, ConfigError, ModelError
from quantgrid.serve.deploy import DirReleaseSource, ReleaseRef
from quantgrid.serve.vllm import VllmDeployer, build_command, parse_adapters, vllm_rank

BASE_CFG = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 512}


def make_base(d: Path, **over) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({**BASE_CFG, **over}))
    return d


def fingerprint(base: Path) -> str:
    return BaseShape.from_config(json.loads((base / "config.json").read_text()), name="").fingerprint


def make_adapter(d: Path, r: int, base: Path | None = None, template: str | None = None, version: str | None = None,
                 rank_pattern: dict | None = None) -> Path:
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": r,
                                                       "rank_pattern": rank_pattern or {}}))
    if base is not None:
        manifest = {"base_model": {"name": "tiny", "fingerprint": fingerprint(base)}}
        if version:
            manifest["version"] = version
        (d / "quantgrid.json").write_text(json.dumps(manifest))
    if template is not None:
        (d / "chat_template.jinja").write_text(template)
    return d


def test_ranks_round_up_to_what_vllm_accepts():
    assert [vllm_rank(r) for r in (1, 2, 8, 9, 17, 64, 300, 512)] == [1, 8, 8, 16, 32, 64, 320, 512]
    with pytest.raises(ConfigError, match="above vLLM's maximum"):
        vllm_rank(513)


def test_command_has_release_adapters_rank_and_the_release_template(tmp_path):
    base = make_base(tmp_path / "base")
    a = make_adapter(tmp_path / "a", 4, base, template="A")
    b = make_adapter(tmp_path / "b", 8, base, rank_pattern={"model.layers.0.self_attn.q_proj": 12})
    rel = make_adapter(tmp_path / "rel", 6, base, template="REL")
    cmd = build_command(str(base), parse_adapters([f"a={a}", f"b={b}"]), ReleaseRef("2026.48", rel),
                        port=8123, python="/venv/bin/python")
    argv = cmd.argv()
    assert argv[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(base.resolve())]
    i = argv.index("--lora-modules")
    assert argv[i + 1:i + 4] == [f"quantgrid={rel.resolve()}", f"a={a.resolve()}", f"b={b.resolve()}"]
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # rank_pattern's 12 -> 16
    assert argv[argv.index("--max-loras") + 1] == "3"
    assert argv[argv.index("--chat-template") + 1] == str(rel / "chat_template.jinja")
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    assert "--enable-lora" in argv


def test_command_refuses_bad_inputs(tmp_path):
    base = make_base(tmp_path / "base")
    other = make_base(tmp_path / "other", hidden_size=256)
    good = make_adapter(tmp_path / "good", 8, base)
    foreign = make_adapter(tmp_path / "foreign", 8, other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no adapter_config.json"):
        build_command(str(base), {"x": tmp_path / "empty"})
    with pytest.raises(AdapterMismatchError, match="trained for base"):
        build_command(str(base), {"good": good, "foreign": foreign})
    with pytest.raises(AdapterMismatchError, match="different bases"):  # a hub id: no local config to compare
        build_command("org/some-model", {"good": good, "foreign": foreign})
    with pytest.raises(ConfigError, match="above vLLM's maximum"):
        build_command(str(base), {"big": make_adapter(tmp_path / "big", 1024, base)})
    with pytest.raises(ConfigError, match="below adapter good's rank 8"):
        build_command(str(base), {"good": good}, max_lora_rank=4)
    with pytest.raises(ConfigError, match="nothing to serve"):
        build_command(str(base), {})
    for spec, msg in (("noequals", "not NAME=PATH"), ("quantgrid=/x", "cannot be a model name"),
                      ("=x", "not NAME=PATH")):
        with pytest.raises(ConfigError, match=msg):
            parse_adapters([spec])
    with pytest.raises(ConfigError, match="given twice"):
        parse_adapters(["a=/x", "a=/y"])


def test_cli_prints_the_command_and_refuses_clearly(tmp_path):
    base = make_base(tmp_path / "base")
    rel = make_adapter(tmp_path / "rel", 32, base, template="T")
    runner = CliRunner()
    res = runner.invoke(app, ["vllm", "command", "--base", str(base), "--release", str(rel), "--port", "9001",
                              "--python", "py", "--max-lora-rank", "48", "--", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == (f"py -m vllm.entrypoints.openai.api_server --model {base.resolve()} --enable-lora "
                                  f"--lora-modules quantgrid={rel.resolve()} --max-lora-rank 64 --max-loras 1 "
                                  f"--chat-template {rel.resolve() / 'chat_template.jinja'} --host 127.0.0.1 "
                                  f"--port 9001 --dtype float32")
    res = runner.invoke(app, ["vllm", "command", "--base", str(base), "--adapter", f"x={tmp_path / 'missing'}"])
    assert res.exit_code == 1 and "no adapter_config.json" in res.output
    res = runner.invoke(app, ["vllm", "command", "--base", str(base), "--release", "latest"])
    assert res.exit_code == 2 and "needs --hub" in res.output



def test_cli_flags_come_from_the_settings_models():
    from quantgrid.cli.vllm import command, deploy
    from quantgrid.serve.vllm_settings import VllmCommandSettings, VllmDeploySettings

    assert [set(g.settings) for g in command.settings_groups] == [set(VllmCommandSettings.model_fields)]
    assert [set(g.settings) for g in deploy.settings_groups] == [set(VllmDeploySettings.model_fields)]
    runner = CliRunner()
    res = runner.invoke(app, ["vllm", "deploy", "--vllm-url", "http://127.0.0.1:1", "--hub", "http://127.0.0.1:1",
                              "--interval", "0"])
    assert res.exit_code == 2 and "--interval" in res.output, res.output
    res = runner.invoke(app, ["vllm", "command", "--base", "b", "--release", "r", "--port", "0"])
    assert res.exit_code == 2 and "--port" in res.output, res.output


class FakeVllm:
    """vLLM's LoRA routes on 127.0.0.1: /v1/models lists what is loaded, load refuses a path in ``bad``."""

    def __init__(self):
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []
        self.bad: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, body):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                data = [{"id": "base", "root": "/base", "parent": None}]
                data += [{"id": n, "root": p, "parent": "base"} for n, p in fake.loaded.items()]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append((self.path, body))
                name = body["lora_name"]
                if self.path == "/v1/unload_lora_adapter":
                    if name not in fake.loaded:
                        return self._send(404, {"error": {"message": f"'{name}' not found"}})
                    del fake.loaded[name]
                    return self._send(200, "Success")
                if name in fake.loaded:
                    return self._send(400, {"error": {"message": "already loaded"}})
                if body["lora_path"] in fake.bad:
                    return self._send(500, {"error": {"message": "bad weights"}})
                fake.loaded[name] = body["lora_path"]
                return self._send(200, "Success")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)


@pytest.fixture
def fake_vllm():
    f = FakeVllm()
    yield f
    f.close()


def test_deploy_swaps_new_releases_and_keeps_the_old_one_on_failure(tmp_path, fake_vllm):
    base = make_base(tmp_path / "base")
    root = tmp_path / "releases"
    r1 = make_adapter(root / "2026.47", 8, base)
    fake_vllm.loaded["quantgrid"] = str(r1.resolve())  # the server was started with release 2026.47
    dep = VllmDeployer(fake_vllm.url, DirReleaseSource(root), interval_s=0.01, max_lora_rank=16)
    try:
        assert dep.check_now() is False and dep.version == "2026.47" and fake_vllm.calls == []  # already served

        r2 = make_adapter(root / "2026.48", 8, base)
        fake_vllm.bad.add(str(r2.resolve()))
        assert dep.check_now() is False and dep.failures == 1
        assert fake_vllm.loaded["quantgrid"] == str(r1.resolve()) and dep.version == "2026.47"  # rolled back

        fake_vllm.bad.clear()  # retried at the next check
        assert dep.check_now() is True and dep.swaps == 1 and dep.version == "2026.48"
        assert fake_vllm.loaded["quantgrid"] == str(r2.resolve())
        assert [c[0] for c in fake_vllm.calls[-2:]] == ["/v1/unload_lora_adapter", "/v1/load_lora_adapter"]
        assert dep.check_now() is False  # unchanged: no calls
        n = len(fake_vllm.calls)

        make_adapter(root / "2026.49", 32, base)  # above the server's --max-lora-rank: refused before unloading
        assert dep.check_now() is False and dep.failures == 2 and len(fake_vllm.calls) == n
        assert fake_vllm.loaded["quantgrid"] == str(r2.resolve())
    finally:
        dep.close()


def test_deploy_loads_into_a_server_without_a_release_and_survives_a_dead_server(tmp_path, fake_vllm):
    base = make_base(tmp_path / "base")
    root = tmp_path / "releases"
    dep = VllmDeployer(fake_vllm.url, DirReleaseSource(root), interval_s=0.01)
    try:
        assert dep.check_now() is False  # nothing published yet
        r1 = make_adapter(root / "2026.47", 8, base)
        dep.run(max_checks=3)
        assert dep.swaps == 1 and fake_vllm.loaded == {"quantgrid": str(r1.resolve())}
        assert fake_vllm.calls == [("/v1/load_lora_adapter", {"lora_name": "quantgrid", "lora_path": str(r1.resolve())})]
    finally:
        dep.close()
    fake_vllm.close()
    make_adapter(root / "2026.48", 8, base)
    dead = VllmDeployer(fake_vllm.url, DirReleaseSource(root), interval_s=0.01, timeout_s=2)
    try:
        assert dead.check_now() is False and dead.failures == 1  # logged, not raised
    finally:
        dead.close()


def test_default_python_is_the_venv_link_not_its_target(tmp_path, monkeypatch):
    # A venv's bin/python is a link to the system interpreter; following it would leave the
    # venv, and vLLM with it.
    base = make_base(tmp_path / "base")
    rel = make_adapter(tmp_path / "rel", 8, base)
    (tmp_path / ".venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm" / "bin" / "python").symlink_to(Path(sys.executable).resolve())
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["vllm", "command", "--base", str(base), "--release", str(rel)])
    assert res.exit_code == 0, res.output
    assert res.output.split()[0] == str(tmp_path / ".venv-vllm" / "bin" / "python")
