"""The hidden benchmark: secret-seeded, operator files added, rotated by `quantgrid hub rotate-benchmark`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app
from quantgrid.errors import ConfigError
from quantgrid.hub.benchmark import benchmark_id, build_hidden_sets, hidden_sets, rotate_secret
from quantgrid.hub.settings import HubSettings


def _texts(examples):
    return [(e.prompt, e.completion) for e in examples]


def test_same_secret_same_items_other_secret_other_items():
    a, b, c = build_hidden_sets("s1", 50), build_hidden_sets("s1", 50), build_hidden_sets("s2", 50)
    assert len(a.benchmark) == 50 and a.ood
    assert _texts(a.benchmark) == _texts(b.benchmark)
    assert len(set(_texts(a.benchmark)) & set(_texts(c.benchmark))) < 5
    assert a.benchmark_id == benchmark_id("s1") != c.benchmark_id
    assert "s1" not in a.benchmark_id


def test_default_size_is_500_plus_operator_files(tmp_path, monkeypatch):
    monkeypatch.delenv("QUANTGRID_HUB_BENCHMARK_SECRET", raising=False)
    ops = tmp_path / "ops.jsonl"
    ops.write_text("".join(json.dumps({"question": f"Operator question {i}?", "answer": f"{i}"}) + "\n"
                           for i in range(7)))
    s = HubSettings.load(storage_dir=tmp_path / "hub", benchmark_files=[ops])
    h = hidden_sets(s)
    assert len(h.benchmark) == 507 and h.n_operator == 7
    assert ("Operator question 3?", "3") in _texts(h.benchmark)


def test_rotate_changes_the_items(tmp_path, monkeypatch):
    monkeypatch.delenv("QUANTGRID_HUB_BENCHMARK_SECRET", raising=False)
    s = HubSettings.load(storage_dir=tmp_path / "hub", benchmark_size=20)
    before = _texts(hidden_sets(s).benchmark)
    old, new = rotate_secret(s)
    assert old != new
    assert _texts(hidden_sets(s).benchmark) != before
    assert (tmp_path / "hub" / "benchmark_secret").stat().st_mode & 0o077 == 0


def test_rotate_refuses_a_secret_set_in_settings(tmp_path):
    s = HubSettings.load(storage_dir=tmp_path, benchmark_secret="fixed")
    with pytest.raises(ConfigError, match="cannot be rotated"):
        rotate_secret(s)


def test_cli_rotate_benchmark(tmp_path, monkeypatch):
    monkeypatch.delenv("QUANTGRID_HUB_BENCHMARK_SECRET", raising=False)
    runner = CliRunner()
    r1 = runner.invoke(app, ["hub", "rotate-benchmark", "--storage", str(tmp_path), "--yes"])
    r2 = runner.invoke(app, ["hub", "rotate-benchmark", "--storage", str(tmp_path), "--yes"])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert r1.output.split("-> ")[1].split()[0] == r2.output.split("rotated: ")[1].split()[0]
    r3 = runner.invoke(app, ["hub", "rotate-benchmark", "--storage", str(tmp_path)], input="n\n")
    assert r3.exit_code == 1


def test_hidden_benchmark_overlaps_no_public_set():
    """Every generated hidden item is checked against every built-in set (exact and n-gram)."""
    from quantgrid.data.finance import generate
    from quantgrid.data.sets import builtin_sets
    from quantgrid.data.split import find_leakage
    from quantgrid.hub.benchmark import public_examples, seed_from_secret

    assert {"finance-train", "finance-dev", "general-ood"} <= set(builtin_sets())
    public = public_examples()
    # The raw draw of this secret does leak (the templates are shared with the public sets) ...
    raw = generate(500, seed_from_secret("leaky"))
    assert find_leakage(public, raw).leaked_bench
    # ... the hidden benchmark made from it does not, and it is still full size and reproducible.
    hidden = build_hidden_sets("leaky", 500).benchmark
    report = find_leakage(public, hidden)
    assert len(hidden) == 500 and report.overlaps == [], report.to_dict()
    assert _texts(hidden) == _texts(build_hidden_sets("leaky", 500).benchmark)
    assert len(set(_texts(hidden))) == 500
