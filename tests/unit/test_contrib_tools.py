"""`quantgrid propose`, `quantgrid data sample` and the provenance the data commands record."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app

runner = CliRunner()


def test_generated_data_records_its_provenance_in_the_adapters_log(tmp_path):
    training = tmp_path / "adapters" / "x" / "training"
    training.mkdir(parents=True)
    log = training / "TRAINING_LOG.md"
    log.write_text("## Copyright\n\nMy own notes, kept.\n")
    for seed in (1, 2):  # a second run replaces the entry, never duplicates it
        res = runner.invoke(app, ["data", "finance", "--n", "20", "--seed", str(seed), "--out",
                                  str(training / "dataset.jsonl")])
        assert res.exit_code == 0, res.output
    text = log.read_text()
    assert "My own notes, kept." in text and text.count("## Synthetic-data provenance") == 1
    assert "20 examples by `quantgrid data finance`" in text and "seed 2" in text and "seed 1" not in text
    assert "templates: finance/" in text and "dataset.jsonl" not in text  # no user file names in the log
    # outside an adapter's training/ folder nothing is written
    runner.invoke(app, ["data", "finance", "--n", "5", "--out", str(tmp_path / "loose.jsonl")])
    assert not (tmp_path / "TRAINING_LOG.md").exists()


def test_data_sample_draws_the_review_sample_and_records_the_rejection_rate(tmp_path):
    training = tmp_path / "training"
    training.mkdir()
    data = training / "dataset.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(95)))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Write finance questions.")
    review = tmp_path / "review.jsonl"
    args = ["data", "sample", str(data), "--fraction", "0.1", "--out", str(review), "--model", "gpt-x",
            "--prompt-file", str(prompt)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in review.read_text().splitlines()]
    assert len(rows) == 10 and all(r["review"] is None and r["question"] == f"q{r['line'] - 1}" for r in rows)
    runner.invoke(app, args)
    assert [json.loads(x) for x in review.read_text().splitlines()] == rows  # the same seed, the same sample
    for i, r in enumerate(rows):
        r["review"] = "reject" if i < 3 else "accept"
    review.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["data", "sample", str(data), "--reviewed", str(review), "--model", "gpt-x"])
    assert res.exit_code == 0, res.output
    log = (training / "TRAINING_LOG.md").read_text()
    assert "review sample: 10 of 95" in log and "generated with the model `gpt-x`" in log
    assert "rejected 3 (rejection rate 30%)" in log and "prompt file: sha256" in log
    rows[0]["review"] = "maybe"
    review.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["data", "sample", str(data), "--reviewed", str(review)])
    assert res.exit_code != 0 and "review='maybe'" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["data", "sample", str(data), "--fraction", "0"])
    assert res.exit_code != 0 and "--fraction" in res.output


def test_propose_runs_the_base_on_the_users_queries(tiny_base, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("# my domain\nWhat is EBITDA?\nHow is WACC computed?\nWhat is a bond's duration?\n")
    out = tmp_path / "PROPOSAL.md"
    res = runner.invoke(app, ["propose", str(queries), "--domain", "Corporate finance", "--base-model", tiny_base,
                              "--max-new-tokens", "8", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    md = out.read_text()
    assert md.startswith("# Adapter proposal: Corporate finance")
    assert md.count("### Query ") == 3 and "How is WACC computed?" in md and "**Base model:**" in md
    queries.write_text("What is EBITDA?\nWhat is WACC?\n")
    res = runner.invoke(app, ["propose", str(queries), "--domain", "x", "--base-model", tiny_base])
    assert res.exit_code != 0 and "holds 2 queries" in res.output


@pytest.mark.parametrize("fraction, n, k", [(0.1, 95, 10), (0.1, 100, 10), (0.5, 3, 2), (1.0, 7, 7), (0.01, 5, 1)])
def test_the_review_sample_is_at_least_the_fraction(fraction, n, k):
    from quantgrid.data.provenance import draw_sample

    assert len(draw_sample(n, fraction, seed=0)) == k
