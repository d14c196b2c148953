"""`quantgrid eval` end to end on the tiny base: results.json, verdict, adapter files, bad input."""

from __future__ import annotations

import json
import math

import pytest
from eval_helpers import write_jsonl

from quantgrid.data import finance
from quantgrid.errors import AdapterMismatchError, QuantGridError
from quantgrid.eval.harness import EvalConfig, run_eval

LOCOLLM_FIELDS = ["adapter", "base_model", "quantization", "benchmark", "n_examples", "metric", "adapter_score",
                  "base_model_score", "improvement", "timestamp"]


@pytest.fixture(scope="module")
def ood_file(tmp_path_factory):
    from quantgrid.data import load_examples

    return write_jsonl(tmp_path_factory.mktemp("ood") / "ood.jsonl", load_examples("builtin:general-ood")[:30])


def test_trained_adapter_beats_base_on_finance_dev_with_verdict(tiny_base, adapter_copy, ood_file, tmp_path):
    from quantgrid.adapter import hashed_files, read_manifest

    out = tmp_path / "out" / "results.json"
    cfg = EvalConfig(benchmark="builtin:finance-dev", adapter=adapter_copy, base_model=tiny_base, limit=40,
                     ood=str(ood_file), output=out, write_into_adapter=True, max_new_tokens=8,
                     metrics=["exact_match", "rouge_l", "bleu", "factuality"])
    ev = run_eval(cfg)
    r = json.loads(out.read_text())  # strict JSON
    assert list(r)[: len(LOCOLLM_FIELDS)] == LOCOLLM_FIELDS
    assert r["adapter"] == "fin" and r["base_model"] == "quantgrid-tiny-test" and r["n_examples"] == 40
    assert r["metric"] == "loss" and r["quantization"] == "float32"
    # the done-when: lower loss than the base on the finance dev set, and a verdict
    assert r["loss"]["adapter"]["mean_nats_per_token"] < r["loss"]["base"]["mean_nats_per_token"]
    assert r["adapter_score"] < r["base_model_score"] and r["improvement"] > 0
    lo, hi = r["loss"]["delta_ci"]
    assert lo <= r["loss"]["delta"] <= hi
    v = r["verdict"]
    assert v["in_domain_better"] is True
    assert v["passed"] == (v["in_domain_better"] and r["ood"]["relative_change"] <= 0.05)
    assert r["ood"]["n_examples"] == 30 and r["ood"]["threshold"] == 0.05
    assert set(r["metrics"]) == {"exact_match", "rouge_l", "bleu", "factuality"}
    assert r["metrics"]["factuality"]["base"]["n_scored"] == sum(bool(e.context) for e in ev.examples)
    assert len(ev.answers[None]) == 40 == len(ev.answers["adapter_0"])
    # REPORT.md beside results.json, and the adapter's eval/ folder + manifest
    report = (out.parent / "REPORT.md").read_text()
    assert "## Proof of loss" in report and "## The five worst examples" in report and "## Diagnoses" in report
    assert report.count("\n| ") >= 5 + 2
    assert "fewer than 500 examples (200)" in report  # the fixture trains on 200
    for name in ("benchmark.jsonl", "results.json", "REPORT.md"):
        assert (adapter_copy / "eval" / name).is_file()
    assert len((adapter_copy / "eval" / "benchmark.jsonl").read_text().splitlines()) == 40
    m = read_manifest(adapter_copy)
    assert m.eval["passed"] == v["passed"] and m.eval["loss_adapter"] == pytest.approx(r["adapter_score"])
    assert r["higher_is_better"] is False and r["results_version"] == 1
    assert ev.results.improvement == pytest.approx(r["improvement"]) and ev.results.adapter_better
    assert m.files == hashed_files(adapter_copy)  # hashes cover the new eval files
    assert m.author == "tester" and m.dataset.fingerprint["n_examples"] == 200  # kept from before


def test_base_alone_needs_no_adapter_and_skips_generation_for_loss(tiny_base, tmp_path):
    bench = write_jsonl(tmp_path / "b.jsonl", finance.generate(6, 1))
    ev = run_eval(EvalConfig(benchmark=str(bench), base_model=tiny_base, metrics=["loss"], output=tmp_path / "r.json"))
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["adapter"] is None and r["verdict"] is None and r["adapter_score"] is None
    assert math.isfinite(r["base_model_score"]) and r["loss"]["delta"] is None and r["ood"] is None
    assert r["metrics"] == {} and ev.answers == {}


def test_empty_benchmark_is_a_clear_error(tiny_base, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(QuantGridError, match="empty") as e:
        run_eval(EvalConfig(benchmark=str(empty), base_model=tiny_base))
    assert e.value.hint
    no_records = tmp_path / "empty.json"
    no_records.write_text("[]")
    with pytest.raises(QuantGridError, match="empty|no records") as e:
        run_eval(EvalConfig(benchmark=str(no_records), base_model=tiny_base))
    assert e.value.hint
    with pytest.raises(QuantGridError, match="not found"):
        run_eval(EvalConfig(benchmark=str(tmp_path / "missing.jsonl"), base_model=tiny_base))


def test_benchmark_overlapping_the_training_data_warns(trained_adapter, finance_train, tmp_path):
    from quantgrid.adapter import read_manifest
    from quantgrid.eval.harness import overlap_warnings

    manifest = read_manifest(trained_adapter)
    # the manifest's fingerprint (counts + one hash) recognizes the training set itself
    same = overlap_warnings(list(finance_train), trained_adapter, manifest, None)
    assert len(same) == 1 and "is the adapter's training set" in same[0]
    assert overlap_warnings(finance.generate(5, seed=77), trained_adapter, manifest, None) == []
    # partial overlap needs the data itself: the contributor's file stays on their machine
    train_file = write_jsonl(tmp_path / "train.jsonl", finance_train)
    partial = finance_train[:5] + finance_train[-1:] + finance.generate(4, seed=77)
    w = overlap_warnings(partial, trained_adapter, manifest, str(train_file))
    assert len(w) == 1 and w[0].startswith("6 of 10 benchmark items are in the adapter's training data")


def test_overlap_warning_reaches_the_user_and_the_report(tiny_base, trained_adapter, finance_train, tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", finance_train)
    bench = write_jsonl(tmp_path / "bench.jsonl", finance_train[:3] + finance.generate(3, seed=78))
    warned: list[str] = []
    ev = run_eval(EvalConfig(benchmark=str(bench), adapter=trained_adapter, base_model=tiny_base, metrics=["loss"],
                             ood=None, train_data=str(train_file), output=tmp_path / "r.json"),
                  on_warning=warned.append)
    assert warned and warned[0].startswith("3 of 6 benchmark items")
    assert ev.results.warnings[0] == warned[0]
    assert ev.results.overlap.n_overlapping == 3 and ev.results.overlap.checked_per_item
    assert any("overlaps the training data" in d for d in ev.results.diagnoses)
    assert warned[0] in (tmp_path / "r.REPORT.md").read_text()


def test_adapter_for_another_base_names_both(tiny_base, adapter_copy, tmp_path):
    m = json.loads((adapter_copy / "quantgrid.json").read_text())
    m["base_model"].update(name="mistralai/Mistral-7B-v0.1", fingerprint="0123456789abcdef")
    (adapter_copy / "quantgrid.json").write_text(json.dumps(m))
    bench = write_jsonl(tmp_path / "b.jsonl", finance.generate(3, 1))
    with pytest.raises(AdapterMismatchError) as e:
        run_eval(EvalConfig(benchmark=str(bench), adapter=adapter_copy, base_model=tiny_base, ood=None))
    assert "mistralai/Mistral-7B-v0.1" in e.value.message and "quantgrid-tiny-test" in e.value.message


def test_metric_that_does_not_fit_is_na_not_a_crash(tiny_base, trained_adapter, tmp_path):
    from quantgrid.data.types import Example

    bench = write_jsonl(tmp_path / "noctx.jsonl", [Example("What is 2+2?", "4"), Example("Capital of France?", "Paris")])
    ev = run_eval(EvalConfig(benchmark=str(bench), adapter=trained_adapter, base_model=tiny_base, ood=None,
                             metrics=["factuality", "code_compile_rate"], max_new_tokens=4, output=tmp_path / "r.json"))
    f = ev.results.metrics["factuality"]
    assert f.base.score is None and f.adapter.score is None and f.improvement is None
    assert "no benchmark item has a context" in f.adapter.note
    assert any(d.startswith("factuality is n/a") for d in ev.results.diagnoses)
    assert "| factuality | n/a | n/a | n/a | 0 |" in (tmp_path / "r.REPORT.md").read_text()


def test_cli_eval_prints_table_and_errors_cleanly(tiny_base, trained_adapter, tmp_path):
    from typer.testing import CliRunner

    from quantgrid.cli import app

    bench = write_jsonl(tmp_path / "b.jsonl", finance.generate(8, seed=4))
    out = tmp_path / "res" / "results.json"
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--adapter", str(trained_adapter), "--benchmark", str(bench), "--base-model",
                              tiny_base, "--metric", "loss", "--ood", "none", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "verdict: PASS" in res.output and "loss (nats/token" in res.output
    assert json.loads(out.read_text())["verdict"]["passed"] is True
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    res = runner.invoke(app, ["eval", "--benchmark", str(empty), "--base-model", tiny_base])
    # an empty benchmark file is a runtime error (exit 1), not a usage error (exit 2)
    assert res.exit_code == 1 and "error:" in res.output and "empty" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["eval", "--benchmark", str(bench), "--metric", "nope"])
    assert res.exit_code == 2 and "unknown metric 'nope'" in res.output
    res = runner.invoke(app, ["eval", "--benchmark", str(bench), "--write-into-adapter", "--base-model", tiny_base,
                              "--metric", "loss"])
    assert res.exit_code == 2 and "--write-into-adapter needs --adapter" in res.output
    res = runner.invoke(app, ["eval", "--list-metrics"])
    assert res.exit_code == 0 and "exact_match" in res.output and "pattern_compliance" in res.output
    res = runner.invoke(app, ["eval", "--benchmark", str(bench), "--limit", "0"])
    assert res.exit_code == 2 and "--limit" in res.output


def test_each_run_writes_its_own_report_beside_its_output(tiny_base, trained_adapter, tmp_path):
    """LocoLLM's three runs into one eval/ folder: adapter, base alone, out of domain. None overwrites another."""
    from quantgrid.eval.harness import report_path

    assert report_path(tmp_path / "results.json").name == "REPORT.md"
    assert report_path(tmp_path / "base_results.json").name == "base_REPORT.md"
    assert report_path(tmp_path / "ood-results.json").name == "ood-REPORT.md"
    assert report_path(tmp_path / "run1.json").name == "run1.REPORT.md"
    bench = write_jsonl(tmp_path / "b.jsonl", finance.generate(6, seed=5))
    ood = write_jsonl(tmp_path / "o.jsonl", finance.generate(4, seed=6))
    ev_dir = tmp_path / "eval"
    common = dict(base_model=tiny_base, metrics=["loss"], ood=None, bootstrap=100)
    run_eval(EvalConfig(benchmark=str(bench), adapter=trained_adapter, output=ev_dir / "results.json", **common))
    run_eval(EvalConfig(benchmark=str(bench), output=ev_dir / "base_results.json", **common))
    run_eval(EvalConfig(benchmark=str(ood), adapter=trained_adapter, output=ev_dir / "ood_results.json", **common))
    assert sorted(p.name for p in ev_dir.iterdir()) == ["REPORT.md", "base_REPORT.md", "base_results.json",
                                                         "ood_REPORT.md", "ood_results.json", "results.json"]
    assert "Evaluation report: base model" in (ev_dir / "base_REPORT.md").read_text()
    assert "o.jsonl" in (ev_dir / "ood_REPORT.md").read_text() and "b.jsonl" in (ev_dir / "REPORT.md").read_text()
    assert json.loads((ev_dir / "results.json").read_text())["adapter"] is not None


def test_write_into_adapter_keeps_the_contributors_own_benchmark(tiny_base, adapter_copy, tmp_path):
    """LocoLLM's layout: eval/benchmark.jsonl is the user's file; evaluating on another set must not replace it."""
    mine = adapter_copy / "eval" / "benchmark.jsonl"
    mine.parent.mkdir(exist_ok=True)
    mine.write_text(json.dumps({"question": "my own held-out question", "answer": "42"}) + "\n")
    before = mine.read_bytes()
    bench = write_jsonl(tmp_path / "other.jsonl", finance.generate(4, seed=9))
    run_eval(EvalConfig(benchmark=str(bench), adapter=adapter_copy, base_model=tiny_base, metrics=["loss"],
                        ood=None, bootstrap=100, write_into_adapter=True, output=tmp_path / "r.json"))
    assert mine.read_bytes() == before
    assert (adapter_copy / "eval" / "results.json").is_file() and (adapter_copy / "eval" / "REPORT.md").is_file()
