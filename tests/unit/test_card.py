"""Model cards: the Hub's metadata keys in the YAML front matter, the human part, no data."""

from __future__ import annotations

import json

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")

from quantgrid.card import adapter_card, read_front_matter, release_card, write_adapter_card  # noqa: E402
from quantgrid.eval.results import EvalResults  # noqa: E402
from quantgrid.recipe import Recipe  # noqa: E402

SECRET = "Q: What was ACME's undisclosed 2031 revenue?"
RESULTS = {
    "adapter": "my-sec", "base_model": "quantgrid-tiny-test", "benchmark": "/home/ada/private/bench.jsonl",
    "benchmark_fingerprint": "abcdef0123456789ffff", "n_examples": 60, "metric": "loss", "higher_is_better": False,
    "adapter_score": 1.9, "base_model_score": 2.3, "improvement": 0.17,
    "loss": {"base": {"mean_nats_per_token": 2.3, "perplexity": 9.97}, "delta": -0.4,
             "adapter": {"mean_nats_per_token": 1.9, "perplexity": 6.69}},
    "metrics": {"exact_match": {"base": {"score": 0.1}, "adapter": {"score": 0.3}, "improvement": 2.0}},
    "ood": {"benchmark": "builtin:general-dev", "base": {"mean_nats_per_token": 3.0},
            "adapter": {"mean_nats_per_token": 3.05}, "delta": 0.05, "threshold": 0.05},
    "verdict": {"passed": True, "in_domain_better": True, "in_domain_significant": True},
}


def _manifest() -> dict:
    r = Recipe(base_model="quantgrid-tiny-test")
    return {"recipe": r.model_dump(mode="json"), "recipe_hash": r.hash(), "author": "Ada",
            "base_model": {"name": "quantgrid-tiny-test", "fingerprint": "f" * 16}, "non_standard": [],
            "dataset": {"description": "Generated finance Q&A", "fingerprint": {"n_examples": 520, "sha256": "9" * 64}},
            "eval": {"benchmark_fingerprint": RESULTS["benchmark_fingerprint"]}, "files": {}}


def _hub_keys_ok(meta: dict) -> None:
    """The keys the Hub reads, with the types its model-card schema gives them."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert isinstance(meta["base_model"], str) and isinstance(meta["license"], str)
    assert {"quantgrid", "finance"} <= set(meta["tags"])
    name, results = model_index_to_eval_results(meta["model-index"])  # raises on a malformed index
    assert name and results
    data = ModelCardData(**meta)  # round-trips through the Hub's own schema class
    assert data.library_name == "peft" and data.eval_results


def test_adapter_card_front_matter_and_body():
    from huggingface_hub import ModelCard

    text = adapter_card(_manifest(), name="my-sec", results=EvalResults.model_validate(RESULTS), license="apache-2.0")
    card = ModelCard(text)  # the Hub library parses it
    assert card.data.base_model == "quantgrid-tiny-test" and card.data.license == "apache-2.0"
    meta = read_front_matter(text)
    _hub_keys_ok(meta)
    index = meta["model-index"][0]
    values = {m["type"]: m["value"] for r in index["results"] for m in r["metrics"]}
    assert values["loss"] in (1.9, 3.05) and values["exact_match"] == 0.3 and values["perplexity"] == 6.69
    for heading in ("## Training data", "## Recipe", "## Evaluation", "## Limitations"):
        assert heading in card.text
    assert "Generated finance Q&A" in card.text and "520 training examples" in card.text
    assert "/home/ada" not in text  # a local benchmark path is not published
    assert "contributor benchmark abcdef012345" in text


def test_card_never_holds_records(tmp_path):
    from quantgrid.data import write_records
    from quantgrid.data.types import Example

    d = tmp_path / "a"
    write_records(d / "eval" / "benchmark.jsonl", [Example(prompt=SECRET, completion="42 billion")])
    (d / "quantgrid.json").write_text(json.dumps(_manifest()))
    (d / "eval" / "results.json").write_text(json.dumps(RESULTS))
    text = write_adapter_card(d).read_text()
    assert SECRET not in text and "42 billion" not in text
    assert "model-index" in read_front_matter(text)


def test_stale_results_stay_out_of_the_card(tmp_path):
    d = tmp_path / "a"
    (d / "eval").mkdir(parents=True)
    m = _manifest()
    m["eval"] = None  # retrained since the eval: the manifest no longer vouches for results.json
    (d / "quantgrid.json").write_text(json.dumps(m))
    (d / "eval" / "results.json").write_text(json.dumps(RESULTS))
    text = write_adapter_card(d).read_text()
    assert "model-index" not in read_front_matter(text) and "Not evaluated yet" in text
    assert read_front_matter(text)["license"] == "other"


def test_release_card():
    manifest = {"version": "2026.49", "base_model": "quantgrid-tiny-test", "method": "svd", "rank": 16,
                "adapters": [{"id": 1}, {"id": 2}], "contributors": ["ada", "bob"], "recipe_hash": "1234",
                "metrics": {"benchmark": {"previous": 2.5, "new": 2.2, "delta": -0.3},
                            "ood": {"previous": 3.0, "new": 3.01, "delta": 0.01}}}
    text = release_card(manifest)
    meta = read_front_matter(text)
    _hub_keys_ok(meta)
    assert "merge" in meta["tags"] and "# quantgrid release 2026.49" in text and "2 contributed adapter(s)" in text


def test_eval_refreshes_a_quantgrid_card_but_never_a_users_readme(tmp_path):
    from quantgrid.card import refresh_adapter_card

    d = tmp_path / "a"
    d.mkdir()
    (d / "quantgrid.json").write_text(json.dumps(_manifest()))
    write_adapter_card(d, license="apache-2.0")  # no results.json yet
    assert "model-index" not in read_front_matter((d / "README.md").read_text())
    refresh_adapter_card(d, EvalResults.model_validate(RESULTS))
    meta = read_front_matter((d / "README.md").read_text())
    assert "model-index" in meta and meta["license"] == "apache-2.0"  # the declared licence is kept
    (d / "README.md").write_text("# my own readme\n")
    assert refresh_adapter_card(d, EvalResults.model_validate(RESULTS)) is None
    assert (d / "README.md").read_text() == "# my own readme\n"
