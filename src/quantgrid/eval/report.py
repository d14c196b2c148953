"""eval/REPORT.md: what a contributor reads when their adapter is judged (or rejected).

It gives the loss, the metrics, the five worst examples and diagnoses in plain words.
Each diagnosis is a rule over the numbers the evaluation already has, with the
threshold in the code next to it, so a reader of the report can trust and check it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from quantgrid.eval.metrics import answer_quality
from quantgrid.eval.results import EvalResults, TrainingSummary

if TYPE_CHECKING:
    from quantgrid.eval.harness import Evaluation

MIN_TRAIN_EXAMPLES = 500  # LocoLLM's checklist: training/dataset.jsonl with 500+ examples
MIN_BENCHMARK_ITEMS = 50  # LocoLLM's checklist: eval/benchmark.jsonl with 50+ held-out cases
OVERFIT_RATIO = 1.5  # eval loss this many times the final train loss ...
OVERFIT_GAP = 0.3  # ... and at least this many nats/token above it
LOW_QUALITY_SHARE = 0.2  # share of empty or degenerate answers that signals bad data
COLLAPSE_SHARE = 0.5  # share of answers that duplicate another answer


def diagnoses(ev: Evaluation) -> list[str]:
    """Plain-words findings of one ``quantgrid eval`` run, most important first."""
    key = ev.adapter_key
    eval_loss = ev.losses[key].mean if key is not None else None
    return diagnose(ev.results, ev.training, eval_loss=eval_loss,
                    answers=ev.answers.get(key) if key is not None else None)


def diagnose(r: EvalResults, train: TrainingSummary, *, eval_loss: float | None = None,
             answers: list[str] | None = None) -> list[str]:
    """Plain-words findings over typed results, most important first. Empty when nothing looks wrong.

    ``eval_loss`` is the adapter's benchmark loss (for the overfitting rule) and ``answers``
    its generated answers (for the answer-quality rules); both are optional.
    """
    out: list[str] = []
    loss, ood, verdict = r.loss, r.ood, r.verdict
    has_adapter = loss.adapter is not None
    if r.overlap.leaks:
        what = ("the benchmark is the training set (same dataset fingerprint)" if r.overlap.same_fingerprint
                else f"{r.overlap.n_overlapping} of {r.n_examples} items are in the training data")
        out.append(f"benchmark overlaps the training data: {what}; the scores overstate the adapter")
    if has_adapter and loss.delta is not None and loss.delta >= 0:
        out.append("the adapter does not lower the loss on the benchmark: it has not learned this domain "
                   "(too little or off-topic data, too few steps, or a learning rate too low)")
    elif has_adapter and verdict and not verdict.in_domain_significant:
        out.append("the loss improvement is within noise (the 95% CI of the delta includes 0): "
                   "use a larger benchmark or train on more data")
    ftl = train.final_train_loss
    if ftl is not None and eval_loss is not None and math.isfinite(eval_loss) and \
            eval_loss > OVERFIT_RATIO * ftl and eval_loss - ftl > OVERFIT_GAP:
        out.append(f"train loss far below eval loss ({ftl:.3f} vs {eval_loss:.3f} nats/token): overfitting -- "
                   "train fewer epochs, lower the learning rate, or add more varied data")
    n_train = train.n_examples
    if n_train is not None and n_train < MIN_TRAIN_EXAMPLES:
        out.append(f"fewer than {MIN_TRAIN_EXAMPLES} examples ({n_train}) in the training data: "
                   "collect more before expecting a reliable gain")
    if ood and ood.relative_change is not None and ood.relative_change > ood.threshold:
        out.append(f"out-of-domain loss rose {ood.relative_change:.1%} (more than {ood.threshold:.0%}): "
                   "the adapter forgets general knowledge -- fewer epochs, a lower learning rate, or mix "
                   "general data into the training set")
    if has_adapter and answers:
        q = answer_quality(answers)
        bad = q["empty"] + q["repetitive"]
        if bad >= LOW_QUALITY_SHARE:
            out.append(f"answers empty or repeated ({q['empty']:.0%} empty, {q['repetitive']:.0%} repetitive): "
                       "low-quality data -- check the training answers are complete and end cleanly")
        if q["duplicated"] >= COLLAPSE_SHARE:
            out.append(f"{q['duplicated']:.0%} of the answers duplicate another answer: the adapter gives the "
                       "same reply to different questions (mode collapse, or training data with little variety)")
    if r.n_examples < MIN_BENCHMARK_ITEMS:
        out.append(f"the benchmark has fewer than {MIN_BENCHMARK_ITEMS} items ({r.n_examples}): "
                   "the scores are noisy")
    skipped = loss.base.n_skipped
    if skipped:
        out.append(f"{skipped} benchmark item(s) had a prompt that fills max_length, so nothing was scored: "
                   "raise max_seq_length or shorten the contexts")
    if train.non_standard:
        out.append(f"non-standard LoRA settings ({', '.join(train.non_standard)}): the hub will not merge "
                   "this adapter into a release")
    requested = r.settings.metrics_requested
    for name, m in r.metrics.items():
        side = m.adapter or m.base
        if name in requested and side.score is None and side.note:
            out.append(f"{name} is n/a: {side.note}")
    return out


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _clip(text: str, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _cell(text: str) -> str:
    return _clip(text).replace("|", "\\|")


def worst_examples(ev: Evaluation, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` items with the highest loss under the adapter (the base without one)."""
    key = ev.adapter_key
    scored = ev.losses[key].losses
    base = ev.losses[None].losses
    order = sorted((i for i, x in enumerate(scored) if math.isfinite(x)), key=lambda i: (-scored[i], i))[:k]
    rows = []
    for i in order:
        ex = ev.examples[i]
        rows.append({"index": i, "prompt": ex.prompt, "reference": ex.completion, "loss": scored[i],
                     "base_loss": base[i], "answer": (ev.answers.get(key) or [None] * len(ev.examples))[i]})
    return rows


def report_markdown(ev: Evaluation) -> str:
    r = ev.results
    loss, ood, verdict = r.loss, r.ood, r.verdict
    title = r.adapter or f"base model {r.base_model}"
    better = "higher" if r.higher_is_better else "lower"
    lines = [f"# Evaluation report: {title}", "",
             f"Base model `{r.base_model}` ({r.quantization}), benchmark `{r.benchmark}` "
             f"({r.n_examples} items), {r.timestamp}. Written by `quantgrid eval`.", "",
             f"Primary metric `{r.metric}` ({better} is better): base {_fmt(r.base_model_score)}, adapter "
             f"{_fmt(r.adapter_score)}, improvement "
             f"{f'{r.improvement:+.1%}' if r.improvement is not None else 'n/a'} (positive: the adapter is better).",
             ""]
    if verdict is not None:
        lines += [f"## Verdict: {'PASS' if verdict.passed else 'FAIL'}", ""]
        lines += [f"- {reason}" for reason in verdict.reasons] + [""]
    lines += ["## Proof of loss", "", "Mean cross-entropy per completion token, in nats (lower is better).", "",
              "| set | base | adapter | delta | 95% CI of delta |", "|---|---:|---:|---:|---|"]
    ci = loss.delta_ci
    lines.append(f"| benchmark | {_fmt(loss.base.mean_nats_per_token)} | "
                 f"{_fmt(r.adapter_loss)} | {_fmt(loss.delta)} | "
                 f"{f'[{ci[0]:.4f}, {ci[1]:.4f}]' if ci else 'n/a'} |")
    if ood:
        change = ood.relative_change
        lines.append(f"| out of domain (`{ood.benchmark}`) | {_fmt(ood.base.mean_nats_per_token)} | "
                     f"{_fmt(ood.adapter.mean_nats_per_token)} | {_fmt(ood.delta)} | "
                     f"change {_fmt(change * 100 if change is not None else None, 1)}% |")
    lines.append("")
    if r.metrics:
        lines += ["## Generation metrics", "", "Greedy decoding; BLEU is on sacrebleu's 0-100 scale, the others are "
                  "fractions. n/a: the metric does not apply to this benchmark.", "",
                  "| metric | base | adapter | improvement | items scored |", "|---|---:|---:|---:|---:|"]
        for name, m in r.metrics.items():
            a = m.adapter
            imp = m.improvement
            lines.append(f"| {name} | {_fmt(m.base.score)} | {_fmt(a.score if a else None)} | "
                         f"{f'{imp:+.1%}' if imp is not None else 'n/a'} | {(a or m.base).n_scored} |")
        lines.append("")
    lines += ["## Diagnoses", ""]
    lines += [f"- {d}" for d in r.diagnoses] or ["- nothing looks wrong"]
    lines.append("")
    if r.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in r.warnings] + [""]
    worst = worst_examples(ev)
    if worst:
        who = "adapter" if ev.adapter_key else "base"
        lines += ["## The five worst examples", "", f"Highest loss under the {who}.", "",
                  "| # | question | reference | answer | loss | base loss |", "|---:|---|---|---|---:|---:|"]
        for w in worst:
            lines.append(f"| {w['index'] + 1} | {_cell(w['prompt'])} | {_cell(w['reference'])} | "
                         f"{_cell(w['answer']) if w['answer'] is not None else 'not generated'} | "
                         f"{w['loss']:.3f} | {w['base_loss']:.3f} |")
        lines.append("")
    return "\n".join(lines)
