"""The whole contributor loop on a tiny base of every family: train -> eval -> package ->
hub validation -> serving engine -> GGUF export (base and adapter) -> llama.cpp logits.

Slow (about a minute per family on two cores): ``pytest -m slow tests/integration/test_families.py``.
The default suite runs the GGUF round trip of every family (tests/unit/export/test_gguf.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from quantgrid.cli import app
from quantgrid.ml.tiny import TINY_FAMILIES

pytestmark = pytest.mark.slow
runner = CliRunner()
PROMPT = "Question: What is the price to earnings ratio of a stock?\nAnswer:"


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def loop(request, tiny_family_base, tmp_path_factory):
    from quantgrid.data import load_examples, write_records

    base = tiny_family_base(request.param)
    d = tmp_path_factory.mktemp(f"loop-{request.param}")
    train = write_records(d / "train.jsonl", load_examples("builtin:finance-train")[:96])
    out = d / "adapter"
    r = runner.invoke(app, ["train", "--base-model", base, "--dataset", str(train), "--output", str(out),
                            "--max-steps", "12", "--batch-size", "8", "--lr", "3e-3", "--progress", "none",
                            "--author", "Ada"])
    assert r.exit_code == 0, r.output
    return {"family": request.param, "base": base, "adapter": out, "dir": d}


def test_train_eval_package_validate(loop):
    from quantgrid.hub.benchmark import build_hidden_sets
    from quantgrid.hub.validate import validate_submission
    from quantgrid.recipe import Recipe

    base, adapter, d = loop["base"], loop["adapter"], loop["dir"]
    r = runner.invoke(app, ["eval", "--benchmark", "builtin:finance-dev", "--limit", "16", "--adapter", str(adapter),
                            "--base-model", base, "--metric", "loss", "--ood", "none", "--write-into-adapter",
                            "--output", str(d / "eval" / "results.json")])
    assert r.exit_code in (0, 1), r.output  # a failed verdict exits 1; the run itself worked
    results = json.loads((d / "eval" / "results.json").read_text())
    assert results["quantization"] == "float32" and results["loss"]["adapter"]["n_tokens"] > 0
    r = runner.invoke(app, ["package", str(adapter), "--author", "Ada", "--dataset-desc", "finance Q&A",
                            "--out", str(d / "zip")])
    assert r.exit_code == 0, r.output
    (zip_path,) = (d / "zip").glob("quantgrid_submission_*.zip")
    verdict = validate_submission(zip_path.read_bytes(), recipe=Recipe(base_model=base), base_path=base,
                                  hidden=build_hidden_sets("families-secret", size=16, ood_size=8))
    assert verdict.report.get("stage") != "static", verdict.report  # the hub reads this family's adapter
    assert verdict.score is not None


def test_serving_engine_answers_like_peft(loop):
    import torch

    from quantgrid.ml.models import load_adapter, load_base
    from quantgrid.serve.engine import Engine
    from quantgrid.serve.sampling import SamplingParams

    model, tok = load_base(loop["base"])
    ids = tok(PROMPT).input_ids
    peft_model = load_adapter(model, loop["adapter"])
    with torch.no_grad():
        ref = peft_model.generate(input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=None)[0, len(ids):].tolist()
    serve_model, serve_tok = load_base(loop["base"])
    engine = Engine(serve_model, serve_tok).start()
    try:
        engine.register_adapter("fin", loop["adapter"])
        text, _ = engine.generate(ids, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), adapter="fin")
    finally:
        engine.stop()
    assert text == tok.decode(ref, skip_special_tokens=True)


def test_gguf_export_matches_peft_in_llama_cpp(loop, tmp_path):
    import llama_cpp
    import torch

    from quantgrid.ml.models import load_adapter, load_base

    base_gguf, lora_gguf = tmp_path / "base.gguf", tmp_path / "lora.gguf"
    for args in (["--base", loop["base"], "--out", str(base_gguf), "--outtype", "f32"],
                 ["--adapter", str(loop["adapter"]), "--base", loop["base"], "--out", str(lora_gguf), "--outtype",
                  "f32"]):
        r = runner.invoke(app, ["export", "gguf", *args])
        assert r.exit_code == 0, r.output
    model, tok = load_base(loop["base"])
    ids = tok(PROMPT).input_ids
    with torch.no_grad():
        ref = load_adapter(model, loop["adapter"])(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(base_gguf), lora_path=str(lora_gguf), logits_all=True, verbose=False,
                          n_ctx=256)
    try:
        assert llm.tokenize(PROMPT.encode(), add_bos=tok.bos_token_id is not None, special=False) == ids
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3
    assert Path(base_gguf).stat().st_size > Path(lora_gguf).stat().st_size
