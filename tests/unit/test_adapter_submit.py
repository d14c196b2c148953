"""prepare_submission / verify_submission / run_checklist and their CLI commands."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from malicious import generator as g
from typer.testing import CliRunner

from quantgrid.adapter import Manifest, check_submission
from quantgrid.cli import app
from quantgrid.errors import ValidationError
from quantgrid.hub.submit import package, prepare_submission, run_checklist, verify_submission
from quantgrid.utils import sha256_file


def _bench_rows(n: int) -> str:
    return "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(n))


def make_adapter_dir(root: Path, *, n_train: int = 800, n_bench: int = 60, delta: float = -0.2,
                     ood: bool = True, log: str = "## Data sources\nbuiltin:finance-train (generated)\n") -> Path:
    """A complete adapter directory, as train + eval would leave it (weights from the generator)."""
    d = root / "adapter"
    (d / "training").mkdir(parents=True)
    (d / "eval").mkdir()
    files = g.good_files()
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        (d / name).write_bytes(files[name])
    (d / "training/train_config.yaml").write_text("lr: 0.0002\n")
    (d / "training/TRAINING_LOG.md").write_text(log)
    (d / "training/loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    (d / "training/dataset.jsonl").write_text('{"question": "secret", "answer": "data"}\n')
    (d / "checkpoint-1").mkdir()
    (d / "checkpoint-1/optimizer.pt").write_bytes(b"\x80\x02N.")
    (d / "eval/benchmark.jsonl").write_text(_bench_rows(n_bench))
    results = {"adapter": "adapter", "base_model": "tiny", "n_examples": n_bench, "metric": "loss",
               "loss": {"base": 2.0, "adapter": 2.0 + delta, "delta": delta},
               "leakage": {"exact": 0, "near": 0, "leaked_bench_items": 0}}
    if ood:
        results["ood"] = {"base": 3.0, "adapter": 3.01, "delta": 0.01, "passed": True}
    (d / "eval/results.json").write_text(json.dumps(results))
    m = Manifest.model_validate_json(files["quantgrid.json"])
    m = m.model_copy(update={"dataset": m.dataset.model_copy(update={"fingerprint": {
        "n_examples": n_train, "n_unique": n_train, "sha256": "ab" * 32}}), "author": None})
    (d / "quantgrid.json").write_text(m.model_dump_json())
    return d


def test_prepare_submission_prints_and_packs_only_allowed_files(tmp_path, capsys):
    d = make_adapter_dir(tmp_path)
    out = prepare_submission(d, author_name="ada", dataset_desc="generated finance Q&A", out_dir=tmp_path)
    printed = capsys.readouterr().out
    assert "READY FOR UPLOAD!" in printed
    assert re.search(r"File: quantgrid_submission_\d{10}\.zip", printed)
    assert f"Hash: {sha256_file(out)}" in printed
    assert "training/dataset.jsonl" in printed and "raw training data" in printed
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    assert "training/dataset.jsonl" not in names and not any(n.startswith("checkpoint") for n in names)
    assert names == {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json", "README.md",
                     "training/train_config.yaml", "training/TRAINING_LOG.md", "training/loss.png",
                     "eval/benchmark.jsonl", "eval/results.json"}
    m = verify_submission(out, expected_sha256=sha256_file(out))
    assert m.author == "ada" and m.dataset.description == "generated finance Q&A"
    # the hub's stage 1 accepts exactly what the contributor packaged
    checked = check_submission(out.read_bytes(), g.RECIPE, g.BASE)
    assert checked.manifest.author == "ada"


def test_package_is_deterministic_apart_from_the_name(tmp_path):
    d = make_adapter_dir(tmp_path)
    a = package(d, "ada", "x", tmp_path / "a", quiet=True)
    b = package(d, "ada", "x", tmp_path / "b", quiet=True)
    assert a.sha256 == b.sha256


def test_verify_catches_tampering(tmp_path):
    d = make_adapter_dir(tmp_path)
    out = prepare_submission(d, "ada", "x", tmp_path, quiet=True)
    with pytest.raises(ValidationError) as err:
        verify_submission(out, expected_sha256="0" * 64)
    assert err.value.check == "package.hash"
    # rewrite one entry: the manifest's hash no longer matches
    entries = {}
    with zipfile.ZipFile(out) as zf:
        for n in zf.namelist():
            entries[n] = zf.read(n)
    entries["eval/results.json"] = b'{"loss": {"delta": -9}}'
    tampered = tmp_path / "t.zip"
    tampered.write_bytes(g.zip_bytes(entries))
    with pytest.raises(ValidationError) as err:
        verify_submission(tampered)
    assert err.value.check == "manifest.hash"


def test_package_warns_about_files_changed_after_the_manifest(tmp_path, capsys):
    d = make_adapter_dir(tmp_path)
    prepare_submission(d, "ada", "x", tmp_path, quiet=True)  # manifest in dir has no file hashes yet
    m = Manifest.model_validate_json((d / "quantgrid.json").read_text())
    from quantgrid.adapter import hashed_files

    (d / "quantgrid.json").write_text(m.model_copy(update={"files": hashed_files(d)}).model_dump_json())
    (d / "README.md").write_text("edited later")
    res = package(d, "ada", "x", tmp_path, quiet=True)
    assert res.stale == ["README.md"]


@pytest.mark.parametrize("bad,what", [
    (lambda d: (d / "adapter_model.safetensors").unlink(), "adapter_model.safetensors"),
])
def test_package_refuses_incomplete_dirs(tmp_path, bad, what):
    d = make_adapter_dir(tmp_path)
    bad(d)
    with pytest.raises(ValidationError, match=what):
        prepare_submission(d, "ada", "x", tmp_path, quiet=True)


def test_checklist_all_good(tmp_path):
    items = run_checklist(make_adapter_dir(tmp_path))
    assert [i.name for i in items] == ["files", "training data", "held-out benchmark", "improvement",
                                      "out-of-domain check", "TRAINING_LOG.md"]
    assert all(i.ok for i in items), [i.line() for i in items]


@pytest.mark.parametrize("kwargs,name,reason", [
    ({"n_train": 120}, "training data", "120 training examples"),
    ({"n_bench": 20}, "held-out benchmark", "20 items"),
    ({"delta": 0.05}, "improvement", "not lower"),
    ({"ood": False}, "out-of-domain check", "no `ood`"),
    ({"log": "trained for 3 epochs\n"}, "TRAINING_LOG.md", "does not document"),
])
def test_checklist_failures_say_why(tmp_path, kwargs, name, reason):
    items = {i.name: i for i in run_checklist(make_adapter_dir(tmp_path, **kwargs))}
    assert not items[name].ok and reason in items[name].reason
    assert sum(not i.ok for i in items.values()) == 1


def test_checklist_reads_eval_leakage_warnings_without_the_data(tmp_path):
    d = make_adapter_dir(tmp_path)
    (d / "training/dataset.jsonl").unlink()
    res = json.loads((d / "eval/results.json").read_text())
    del res["leakage"]
    (d / "eval/results.json").write_text(json.dumps(res))
    items = {i.name: i for i in run_checklist(d)}
    assert items["held-out benchmark"].ok and "found no leakage" in items["held-out benchmark"].reason
    res["warnings"] = ["12 of 60 benchmark items are in the adapter's training data (x.jsonl): the scores overstate"]
    (d / "eval/results.json").write_text(json.dumps(res))
    items = {i.name: i for i in run_checklist(d)}
    assert not items["held-out benchmark"].ok and "12 of 60" in items["held-out benchmark"].reason


def test_checklist_finds_leakage_from_opted_in_data(tmp_path):
    d = make_adapter_dir(tmp_path)
    (d / "training/dataset.jsonl").write_text(_bench_rows(60))  # the benchmark is the training data
    items = {i.name: i for i in run_checklist(d)}
    assert not items["held-out benchmark"].ok and "overlap" in items["held-out benchmark"].reason


def test_cli_package_and_check(tmp_path):
    d = make_adapter_dir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(d)])
    assert res.exit_code == 0, res.output
    assert res.output.count("✓") == 6
    res = runner.invoke(app, ["package", str(d), "--author", "ada", "--dataset-desc", "finance", "--out",
                              str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "READY FOR UPLOAD!" in res.output and "Left out raw training data" in res.output
    name = re.search(r"File: (\S+)", res.output).group(1)
    assert (tmp_path / name).is_file()
    (d / "eval/results.json").unlink()
    res = runner.invoke(app, ["check", str(d)])
    assert res.exit_code == 1 and "✗" in res.output
    res = runner.invoke(app, ["package", str(tmp_path / "nope"), "--author", "a", "--dataset-desc", "b"])
    assert res.exit_code == 2 and "not found" in res.output
