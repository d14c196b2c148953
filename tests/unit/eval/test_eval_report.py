"""The verdict and REPORT.md diagnoses, on hand-made numbers (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgrid.data.types import Example
from quantgrid.eval.harness import Evaluation, improvement, judge, training_summary
from quantgrid.eval.loss import LossResult
from quantgrid.eval.report import diagnoses, report_markdown, worst_examples
from quantgrid.eval.results import EvalResults, LossBlock, OodBlock


def _loss(base: float, adapter: float | None, ci=(-0.2, -0.1)) -> LossBlock:
    d = {"base": {"mean_nats_per_token": base, "n_skipped": 0}, "delta": None, "delta_ci": None,
         "relative_change": None, "adapter": None}
    if adapter is not None:
        d.update(adapter={"mean_nats_per_token": adapter}, delta=adapter - base, delta_ci=list(ci),
                 relative_change=(adapter - base) / base)
    return LossBlock.model_validate(d)


def _ood(base: float, adapter: float, threshold: float = 0.05) -> OodBlock:
    return OodBlock.model_validate({"benchmark": "builtin:general-ood", "base": {"mean_nats_per_token": base},
                                    "adapter": {"mean_nats_per_token": adapter}, "delta": adapter - base,
                                    "relative_change": (adapter - base) / base, "threshold": threshold})


def test_judge_minimum_bar():
    ok = judge(_loss(2.0, 1.5), _ood(3.0, 3.1), 0.05)  # OOD +3.3%: allowed
    assert ok.passed and ok.in_domain_better and ok.in_domain_significant and ok.ood_passed
    forgets = judge(_loss(2.0, 1.5), _ood(3.0, 3.3), 0.05)  # OOD +10%
    assert not forgets.passed and forgets.ood_passed is False
    assert any("+10.0%" in r for r in forgets.reasons)
    assert judge(_loss(2.0, 1.5), _ood(3.0, 3.3), 0.15).passed  # the threshold is configurable
    worse = judge(_loss(2.0, 2.1, ci=(0.05, 0.15)), _ood(3.0, 3.0), 0.05)
    assert not worse.passed and not worse.in_domain_better
    noisy = judge(_loss(2.0, 1.99, ci=(-0.05, 0.03)), None, 0.05)
    assert noisy.passed and not noisy.in_domain_significant and noisy.ood_passed is None
    assert any("within noise" in r for r in noisy.reasons)


def test_improvement_follows_locollm_and_inverts_for_loss():
    assert improvement("exact_match", 0.72, 0.41) == pytest.approx(0.756, abs=1e-3)  # LocoLLM's example
    assert improvement("loss", 1.5, 2.0) == pytest.approx(0.25)
    assert improvement("bleu", 10.0, 0.0) is None and improvement("bleu", None, 1.0) is None


def _evaluation(tmp_path: Path, *, answers: list[str], train_log: str | None, n_train: int, ood: dict | None,
                n_items: int = 60) -> Evaluation:
    from quantgrid.adapter import DatasetInfo

    exs = [Example(f"question {i}", f"answer {i}") for i in range(n_items)]
    base = LossResult(None, nll=[3.0 * (i % 7 + 1) for i in range(n_items)], n_tokens=[3] * n_items)
    ad = LossResult("adapter_0", nll=[2.0 * (i % 5 + 1) for i in range(n_items)], n_tokens=[2] * n_items)
    adapter = tmp_path / "ad"
    (adapter / "training").mkdir(parents=True)
    if train_log is not None:
        (adapter / "training" / "TRAINING_LOG.md").write_text(train_log)

    class FakeManifest:  # only the fields training_summary reads
        dataset = DatasetInfo(fingerprint={"n_examples": n_train})
        non_standard = ["lora.r"]

    results = EvalResults(adapter="ad", base_model="tiny", quantization="float32", benchmark="b.jsonl",
                          n_examples=n_items, timestamp="t", loss=_loss(base.mean, ad.mean), ood=ood)
    results.verdict = judge(results.loss, ood, 0.05)
    return Evaluation(results=results, examples=exs, losses={None: base, "adapter_0": ad},
                      answers={None: ["x"] * n_items, "adapter_0": answers},
                      training=training_summary(adapter, FakeManifest()), adapter_key="adapter_0")


LOG = """# Training log

| step | train loss | eval loss | learning rate |
|---:|---:|---:|---:|
| 10 | 2.5000 |  | 2.00e-04 |
| 20 | 0.4000 |  | 1.00e-04 |
| 30 | 0.3000 | 2.9000 | 1.00e-05 |
| 40 | 0.2000 |  | 0.00e+00 |
"""


def test_diagnoses_in_plain_words(tmp_path):
    answers = [""] * 15 + ["same reply"] * 35 + [f"fine {i}" for i in range(10)]
    ev = _evaluation(tmp_path, answers=answers, train_log=LOG, n_train=120, ood=_ood(3.0, 3.6))
    assert ev.training.final_train_loss == pytest.approx(0.3)  # mean of the last three rows
    assert ev.training.final_eval_loss == pytest.approx(2.9)
    found = diagnoses(ev)
    text = "\n".join(found)
    assert "train loss far below eval loss" in text and "overfitting" in text  # 0.3 vs 3.0
    assert "fewer than 500 examples (120)" in text
    assert "out-of-domain loss rose 20.0%" in text
    assert "answers empty or repeated" in text and "low-quality data" in text  # 15 of 60 empty
    assert "duplicate another answer" in text
    assert "non-standard LoRA settings (lora.r)" in text


def test_healthy_adapter_gets_no_alarm(tmp_path):
    healthy_log = LOG.replace("0.4000", "3.9000").replace("0.3000", "3.8000").replace("0.2000", "3.9000")
    ev = _evaluation(tmp_path, answers=[f"answer number {i}" for i in range(60)], train_log=healthy_log,
                     n_train=2000, ood=_ood(3.0, 3.0))
    assert [d for d in diagnoses(ev) if "non-standard" not in d] == []


def test_report_has_loss_metrics_worst_examples_and_verdict(tmp_path):
    ev = _evaluation(tmp_path, answers=[f"a{i}" for i in range(60)], train_log=None, n_train=600, ood=None,
                     n_items=20)
    ev.results.diagnoses = diagnoses(ev)
    worst = worst_examples(ev)
    # adapter per-example loss is (i % 5 + 1): the worst are the items with i % 5 == 4, lowest index first
    assert [w["index"] for w in worst] == [4, 9, 14, 19, 3]
    md = report_markdown(ev)
    assert "## Verdict: PASS" in md and "## Proof of loss" in md
    assert "| 5 | question 4 | answer 4 | a4 | 5.000 |" in md
    assert "fewer than 50 items (20)" in md


def test_improvement_is_positive_when_the_adapter_is_better_whatever_the_metric():
    # loss: lower is better; exact_match: higher is better; a lower-is-better metric by flag
    assert improvement("loss", 1.5, 2.0) > 0 and improvement("loss", 2.5, 2.0) < 0
    assert improvement("exact_match", 0.6, 0.5) > 0 and improvement("exact_match", 0.4, 0.5) < 0
    assert improvement("perplexity_like", 8.0, 10.0, higher_is_better=False) > 0


def test_results_file_round_trips_and_states_its_direction(tmp_path):
    r = EvalResults(base_model="tiny", benchmark="b.jsonl", n_examples=3, metric="loss", higher_is_better=False,
                    adapter_score=1.5, base_model_score=2.0, improvement=0.25, loss=_loss(2.0, 1.5))
    p = tmp_path / "results.json"
    p.write_text(r.to_json())
    back = EvalResults.read(p)
    assert back == r and back.adapter_better is True and '"higher_is_better": false' in p.read_text()
    assert list(json.loads(p.read_text()))[:10] == ["adapter", "base_model", "quantization", "benchmark",
                                                     "n_examples", "metric", "adapter_score", "base_model_score",
                                                     "improvement", "timestamp"]


@pytest.mark.parametrize("body, message", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"base_model": "x"}', "benchmark"),
    ('{"results_version": 99, "base_model": "x"}', "results_version 99"),
])
def test_a_broken_results_file_is_a_clear_error(tmp_path, body, message):
    from quantgrid.errors import DataError

    p = tmp_path / "results.json"
    p.write_text(body)
    with pytest.raises(DataError, match=message) as e:
        EvalResults.read(p)
    assert e.value.hint


def test_public_results_hold_no_text_paths_or_per_example_values():
    loss = _loss(2.0, 1.5)
    loss.base.per_example = [1.0, 2.0]  # an extra field a writer might add
    r = EvalResults(adapter="my-secret-dir", base_model="tiny", benchmark="/home/ada/secret/bench.jsonl",
                    n_examples=2, loss=loss, ood=_ood(3.0, 3.1), warnings=["item 'What did ACME pay?' leaks"],
                    diagnoses=["/home/ada/secret/train.jsonl overlaps"])
    r.verdict = judge(r.loss, r.ood, 0.05)
    text = r.public().to_json()
    for secret in ("my-secret-dir", "/home/ada", "ACME", "per_example"):
        assert secret not in text
    pub = json.loads(text)
    assert pub["warnings"] == pub["diagnoses"] == pub["verdict"]["reasons"] == []
    assert pub["loss"]["adapter"]["mean_nats_per_token"] == 1.5 and pub["verdict"]["passed"] is True
    assert pub["benchmark"] == "local benchmark" and pub["ood"]["benchmark"] == "builtin:general-ood"
