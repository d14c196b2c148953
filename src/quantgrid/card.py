"""Model cards: the ``README.md`` every adapter and every release carries.

A card is what the Hugging Face Hub shows for a model: YAML front matter (the Hub's
model-card metadata: ``base_model``, ``library_name: peft``, ``tags``, ``license``,
``pipeline_tag`` and a ``model-index`` of evaluation results) and a human part (what
the adapter was trained on, the recipe, the evaluation table, limitations).

The metadata is built with ``huggingface_hub.ModelCardData`` so it is exactly what the
Hub parses. A card never holds training or benchmark text: the data is described by
the contributor's one-line description and counted/hashed, never quoted, and a local
benchmark path is shown as "the contributor's benchmark" with its fingerprint.

Results go in only when they belong to these weights: ``eval/results.json`` counts when
the manifest's eval summary names the same benchmark fingerprint (retraining clears the
summary, so a stale file from the previous adapter is left out of the card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantgrid.eval.results import PUBLIC_PREFIXES, EvalResults, LossStats, MetricScore

CARD = "README.md"
TAGS = ["quantgrid", "finance", "lora", "peft"]
PIPELINE_TAG = "text-generation"
DEFAULT_LICENSE = "other"  # the Hub's value for "see the card": the author has not declared one

LIMITATIONS = [
    "A LoRA adapter changes a few low-rank matrices of the base model: it inherits the base's knowledge, "
    "biases and failure modes, and its licence terms.",
    "Trained for finance question answering on the data described above; outside that domain it is no better "
    "than the base and may be worse (see the out-of-domain row, when measured).",
    "Numbers in answers can be wrong: check every figure and calculation before relying on it.",
    "Not investment advice. Nothing it writes is a recommendation to buy or sell anything.",
]


def _benchmark_name(name: str | None, fingerprint: str | None) -> str:
    if name and name.startswith(PUBLIC_PREFIXES):
        return name
    return f"contributor benchmark {fingerprint[:12]}" if fingerprint else "contributor benchmark"


def _f(x: Any, spec: str = ".4f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def front_matter(*, name: str, base_model: str, license: str | None, eval_rows: list[dict[str, Any]],
                 extra_tags: list[str] | None = None) -> str:
    """The YAML metadata block (without the ``---`` fences), via huggingface_hub's schema.

    ``eval_rows``: {"dataset", "dataset_type", "metric", "value", "name"} per metric.
    """
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type=PIPELINE_TAG, task_name="Finance question answering",
                          dataset_type=r["dataset_type"], dataset_name=r["dataset"], metric_type=r["metric"],
                          metric_value=r["value"], metric_name=r["name"]) for r in eval_rows]
    data = ModelCardData(base_model=base_model, library_name="peft", license=license or DEFAULT_LICENSE,
                         tags=[*TAGS, *(extra_tags or [])], pipeline_tag=PIPELINE_TAG, model_name=name,
                         eval_results=results or None)
    return data.to_yaml()


def render(meta_yaml: str, body: str) -> str:
    return f"---\n{meta_yaml.strip()}\n---\n\n{body.strip()}\n"


# ------------------------------------------------------------------ adapters


def fresh_results(adapter_dir: str | Path) -> EvalResults | None:
    """``eval/results.json`` if it was measured on these weights (see the module docstring)."""
    from quantgrid.errors import DataError

    d = Path(adapter_dir)
    p, m = d / "eval" / "results.json", d / "quantgrid.json"
    if not p.is_file() or not m.is_file():
        return None
    try:
        results = EvalResults.read(p)
        summary = json.loads(m.read_text(encoding="utf-8")).get("eval") or {}
    except (DataError, ValueError):
        return None
    if not summary or summary.get("benchmark_fingerprint") != results.benchmark_fingerprint:
        return None
    return results


def _public_set(name: str) -> str:
    """The model-index dataset type of a set: its own name when it is public, else "private"."""
    return name if name.startswith(PUBLIC_PREFIXES) else "private"


def _loss(stats: LossStats | None) -> float | None:
    return stats.mean_nats_per_token if stats is not None else None


def _score(score: MetricScore | None) -> float | None:
    return score.score if score is not None else None


def eval_rows(results: EvalResults | None) -> list[dict[str, Any]]:
    """model-index rows from a results.json: the primary metric, the loss, each extra metric, OOD loss."""
    if results is None:
        return []
    bench = _benchmark_name(results.benchmark, results.benchmark_fingerprint)
    btype = _public_set(results.benchmark)
    rows: list[dict[str, Any]] = []

    def add(dataset: str, dtype: str, metric: str, value: Any, name: str) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append({"dataset": dataset, "dataset_type": dtype, "metric": metric, "value": float(value),
                         "name": name})

    loss = results.loss.adapter
    add(bench, btype, "loss", _loss(loss), "loss (nats per completion token)")
    add(bench, btype, "perplexity", loss.perplexity if loss is not None else None, "perplexity")
    for metric, block in results.metrics.items():
        add(bench, btype, metric, _score(block.adapter), metric)
    ood = results.ood
    if ood is not None:
        add(_benchmark_name(ood.benchmark, None), _public_set(ood.benchmark), "loss", _loss(ood.adapter),
            "out-of-domain loss (nats per completion token)")
    return rows


def _eval_table(results: EvalResults | None) -> list[str]:
    if results is None:
        return ["Not evaluated yet. `quantgrid eval --adapter DIR --benchmark FILE` measures it and refreshes "
                "this card."]
    bench = _benchmark_name(results.benchmark, results.benchmark_fingerprint)
    lines = [f"On {bench} ({results.n_examples} examples); lower loss is better.", "",
             "| measure | base | adapter | change |", "|---|---:|---:|---:|"]
    loss = results.loss
    lines.append(f"| loss (nats/token) | {_f(_loss(loss.base))} | {_f(_loss(loss.adapter))} | "
                 f"{_f(loss.delta, '+.4f')} |")
    for metric, block in results.metrics.items():
        lines.append(f"| {metric} | {_f(_score(block.base))} | {_f(_score(block.adapter))} | "
                     f"{_f(block.improvement, '+.2%')} |")
    ood = results.ood
    if ood is not None:
        lines.append(f"| out-of-domain loss ({_benchmark_name(ood.benchmark, None)}) | {_f(_loss(ood.base))} | "
                     f"{_f(_loss(ood.adapter))} | {_f(ood.delta, '+.4f')} |")
    if results.verdict is not None:
        lines += ["", f"Minimum bar (better than the base in domain, bounded forgetting): "
                      f"{'passed' if results.verdict.passed else 'not passed'}."]
    return lines


def _recipe_lines(recipe: dict[str, Any], non_standard: list[str]) -> list[str]:
    lora, tr = recipe.get("lora", {}), recipe.get("training", {})
    std = (f"**non-standard** ({', '.join(non_standard)}): fine for local use, not mergeable into hub releases"
           if non_standard else "the standard quantgrid recipe")
    return [f"Trained with {std}.", "",
            "| setting | value |", "|---|---|",
            f"| LoRA rank / alpha / dropout | {lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')} |",
            f"| target modules | {', '.join(lora.get('target_modules', []))} |",
            f"| epochs / learning rate / schedule | {tr.get('epochs')} / {tr.get('lr')} / {tr.get('schedule')} |",
            f"| batch size x gradient accumulation | {tr.get('batch_size')} x {tr.get('grad_accum')} |",
            f"| max sequence length | {tr.get('max_seq_length')} |",
            f"| seed | {tr.get('seed')} |",
            f"| prompt template | `{recipe.get('prompt_template')}` |"]


def adapter_card(manifest: dict[str, Any], *, name: str, results: EvalResults | None = None,
                 license: str | None = None) -> str:
    """README.md for an adapter directory, from its manifest (as a dict) and its results."""
    base = (manifest.get("base_model") or {}).get("name") or manifest.get("recipe", {}).get("base_model", "")
    dataset = manifest.get("dataset") or {}
    fp = dataset.get("fingerprint") or {}
    author = manifest.get("author")
    desc = (dataset.get("description") or "").strip() or "No description given (`quantgrid train --description`)."
    body = [f"# {name}", "",
            f"A LoRA adapter for `{base}`, trained with [quantgrid](https://github.com/quantgrid/quantgrid)"
            + (f" by {author}." if author else "."), "",
            "## Training data", "", desc, ""]
    if fp.get("n_examples"):
        body += [f"{fp['n_examples']} training examples (dataset fingerprint `{str(fp.get('sha256', ''))[:16]}`). "
                 "The data itself is not part of this adapter.", ""]
    body += ["## Recipe", "", *_recipe_lines(manifest.get("recipe") or {}, manifest.get("non_standard") or []), "",
             "The full settings are in `training/train_config.yaml`, the loss curves in `training/TRAINING_LOG.md`.",
             "", "## Evaluation", "", *_eval_table(results), "",
             "## How to use", "", "```python",
             "from peft import PeftModel",
             "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "",
             f'base = AutoModelForCausalLM.from_pretrained("{base}")',
             f'tokenizer = AutoTokenizer.from_pretrained("{base}")',
             'model = PeftModel.from_pretrained(base, "PATH_OR_REPO_OF_THIS_ADAPTER")',
             "```", "", "Or serve it: `quantgrid serve --base-model BASE --adapter DIR`.", "",
             "## Limitations", "", *[f"- {x}" for x in LIMITATIONS], ""]
    meta = front_matter(name=name, base_model=base, license=license, eval_rows=eval_rows(results))
    return render(meta, "\n".join(body))


def write_adapter_card(adapter_dir: str | Path, *, name: str | None = None, license: str | None = None,
                       results: EvalResults | None = None) -> Path:
    """(Re)write ``README.md`` of an adapter directory from its manifest and ``results``
    (default: its fresh results, see :func:`fresh_results`)."""
    from quantgrid.utils import atomic_write_text

    d = Path(adapter_dir)
    manifest = json.loads((d / "quantgrid.json").read_text(encoding="utf-8"))
    if license is None:
        license = _license_from_card(d / CARD)
    results = results if results is not None else fresh_results(d)
    return atomic_write_text(d / CARD, adapter_card(manifest, name=name or d.resolve().name, results=results,
                                                    license=license))


def refresh_adapter_card(adapter_dir: str | Path, results: EvalResults) -> Path | None:
    """After an eval wrote ``results`` into the adapter: rewrite its card with them, unless the
    README.md there is not a quantgrid card (a contributor's own README is never replaced)."""
    d = Path(adapter_dir)
    if not (d / "quantgrid.json").is_file():
        return None
    if (d / CARD).is_file() and "quantgrid" not in (read_front_matter((d / CARD).read_text(encoding="utf-8"))
                                                    .get("tags") or []):
        return None
    return write_adapter_card(d, results=results)


def _license_from_card(path: Path) -> str | None:
    """Keep the licence an earlier card declared when the card is refreshed."""
    meta = read_front_matter(path.read_text(encoding="utf-8")) if path.is_file() else {}
    lic = meta.get("license")
    return lic if isinstance(lic, str) and lic != DEFAULT_LICENSE else None


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a card ({} if it has none)."""
    import yaml

    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end == -1:
        return {}
    data = yaml.safe_load(text[4:end])
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------ releases


def release_card(manifest: dict[str, Any], *, license: str | None = None) -> str:
    """README.md for a release directory, from its release.json."""
    m = manifest
    version, base = m.get("version", "?"), m.get("base_model", "")
    met = m.get("metrics") or {}
    bench = met.get("benchmark") or {}
    rows = []
    if isinstance(bench.get("new"), (int, float)):
        rows.append({"dataset": "quantgrid hidden benchmark", "dataset_type": "hub:hidden", "metric": "loss",
                     "value": float(bench["new"]), "name": "loss (nats per completion token)"})
    ood = met.get("ood") or {}
    if isinstance(ood.get("new"), (int, float)):
        rows.append({"dataset": "out-of-domain set", "dataset_type": "hub:ood", "metric": "loss",
                     "value": float(ood["new"]), "name": "out-of-domain loss (nats per completion token)"})
    adapters = m.get("adapters") or []
    body = [f"# quantgrid release {version}", "",
            f"A LoRA adapter for `{base}`: {len(adapters)} contributed adapter(s) from "
            f"{len(m.get('contributors') or [])} contributor(s), merged with `{m.get('method')}` to rank "
            f"{m.get('rank')}.", "",
            "## Training data", "",
            "Each contributor trained on their own finance data, which never left their machine; only the "
            "adapters were submitted. The contributors' one-line descriptions are on the hub's leaderboard.", "",
            "## Recipe", "", f"Every adapter in it was trained with the hub's recipe "
                             f"(`{m.get('recipe_hash', '?')}`), which is what makes an exact merge possible.", "",
            "## Evaluation", ""]
    if bench:
        body += ["| set | previous | this release | change |", "|---|---:|---:|---:|",
                 f"| hidden benchmark (nats/token) | {_f(bench.get('previous'))} | {_f(bench.get('new'))} | "
                 f"{_f(bench.get('delta'), '+.4f')} |"]
        if ood:
            body.append(f"| out-of-domain (nats/token) | {_f(ood.get('previous'))} | {_f(ood.get('new'))} | "
                        f"{_f(ood.get('delta'), '+.4f')} |")
        body += ["", "Details: `RELEASE_NOTES.md`."]
    else:
        body.append("Not evaluated.")
    body += ["", "## Limitations", "", *[f"- {x}" for x in LIMITATIONS], ""]
    meta = front_matter(name=f"quantgrid-{version}", base_model=base, license=license, eval_rows=rows,
                        extra_tags=["merge"])
    return render(meta, "\n".join(body))
