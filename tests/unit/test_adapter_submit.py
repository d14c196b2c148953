"""prepare_submission / verify_submission / run_checklist and their CLI commands."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
from contrib_helpers import SOURCES, _bench_rows, make_adapter_dir, results_json
from malicious import generator as g
from typer.testing import CliRunner

from quantgrid.adapter import Manifest, check_submission
from quantgrid.cli import app
from quantgrid.errors import ValidationError
from quantgrid.hub.submit import package, prepare_submission, run_checklist, verify_submission
from quantgrid.utils import sha256_file


def test_prepare_submission_prints_and_packs_only_allowed_files(tmp_path, capsys):
    d = make_adapter_dir(tmp_path)
    out = prepare_submission(d, author_name="ada", dataset_desc="generated finance Q&A", out_dir=tmp_path)
    printed = capsys.readouterr().out
    assert "READY FOR UPLOAD!" in printed
    assert re.search(r"File: quantgrid_submission_\d{10}\.zip", printed)
    assert f"Hash: {sha256_file(out)}" in printed
    assert "Left out training/dataset.jsonl: your training data" in printed
    assert "Left out eval/benchmark.jsonl: your benchmark items" in printed
    assert "Left out eval/REPORT.md: the report quotes benchmark items" in printed
    assert "Left out eval/base_results.json" in printed and "Left out eval/ood_results.json" in printed
    assert "Reduced training/train_config.yaml" in printed and "Reduced eval/results.json" in printed
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    assert names == {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json",
                     "training/train_config.yaml", "training/TRAINING_LOG.md", "training/loss.png",
                     "eval/results.json"}
    m = verify_submission(out, expected_sha256=sha256_file(out))
    assert m.author == "ada" and m.dataset.description == "generated finance Q&A"
    assert m.eval["loss_delta"] == pytest.approx(-0.2) and m.eval["benchmark"] == "local benchmark"
    # the hub's stage 1 accepts exactly what the contributor packaged
    checked = check_submission(out.read_bytes(), g.RECIPE, g.BASE)
    assert checked.manifest.author == "ada"


def test_nothing_private_leaves_in_the_zip(tmp_path, monkeypatch):
    """LocoLLM's layout after data + train + eval: no record text and no local path in any entry."""
    monkeypatch.setenv("HOME", str(tmp_path))
    d = make_adapter_dir(tmp_path / "projects" / "adapters", name="your-domain")
    out = package(d, "ada", "finance Q&A", tmp_path, quiet=True).path
    secrets = []
    for f in ("training/dataset.jsonl", "eval/benchmark.jsonl"):
        for line in (d / f).read_text().splitlines():
            rec = json.loads(line)
            secrets += [str(v) for v in rec.values() if len(str(v)) >= 4]
    assert len(secrets) > 1000
    secrets += [str(d.resolve()), str(tmp_path), "/home/ada", "projects", "data.jsonl", "benchmark.jsonl",
                "fourteen"]
    with zipfile.ZipFile(out) as zf:
        entries = {n: zf.read(n).decode("utf-8", errors="replace") for n in zf.namelist()}
    leaks = [(n, s) for n, body in entries.items() for s in secrets if s in body]
    assert not leaks, leaks[:5]
    # the folder's name is the adapter's registry name, declared in the manifest and nowhere else
    manifest = json.loads(entries.pop("quantgrid.json"))
    assert manifest["name"] == "your-domain" and not [n for n, b in entries.items() if "your-domain" in b]
    assert "<local path>" in entries["training/train_config.yaml"] and "lr: 0.0002" in entries[
        "training/train_config.yaml"]
    assert "## Data sources" in entries["training/TRAINING_LOG.md"]  # the public part of the log stays


@pytest.mark.parametrize("name, body, check", [
    ("eval/benchmark.jsonl", b'{"question": "q", "answer": "a"}\n', "archive.not_allowed"),
    ("eval/REPORT.md", b"| 1 | q | a |\n", "archive.not_allowed"),
    ("eval/base_results.json", b"{}", "archive.not_allowed"),
    ("training/dataset.jsonl", b'{"question": "q", "answer": "a"}\n', "archive.not_allowed"),
    ("training/train_config.yaml", b"run:\n  dataset: /home/ada/private.jsonl\n", "archive.private"),
    ("training/train_config.yaml", b"run:\n  dataset: my_data.train.jsonl\n", "archive.private"),
    ("training/TRAINING_LOG.md", b"- Source: `/Users/ada/Desktop/clients.jsonl`\n", "archive.private"),
    ("eval/results.json", results_json().encode(), "archive.private"),
])
def test_the_hub_rejects_a_zip_that_carries_private_files(name, body, check):
    """What an old client packaged: the hub's stage 1 refuses it, so it cannot leak from there either."""
    files = g.good_files(extra={name: body})
    with pytest.raises(ValidationError) as err:
        check_submission(g.zip_bytes(files), g.RECIPE, g.BASE)
    assert err.value.check == check, err.value.message
    assert name in err.value.message


def test_the_hub_rejects_a_manifest_naming_the_local_benchmark():
    files = g.good_files()
    m = json.loads(files["quantgrid.json"])
    m["eval"] = {"benchmark": "/home/ada/bench.jsonl", "passed": True}
    files["quantgrid.json"] = json.dumps(m).encode()
    with pytest.raises(ValidationError) as err:
        check_submission(g.zip_bytes(files), g.RECIPE, g.BASE)
    assert err.value.check == "manifest.private"


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
    entries["training/loss.png"] = b"\x89PNG\r\n\x1a\n" + b"\1" * 16
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
    (d / "training/loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\2" * 16)
    res = package(d, "ada", "x", tmp_path, quiet=True)
    assert res.stale == ["training/loss.png"]


@pytest.mark.parametrize("bad,what", [
    (lambda d: (d / "adapter_model.safetensors").unlink(), "adapter_model.safetensors"),
])
def test_package_refuses_incomplete_dirs(tmp_path, bad, what):
    d = make_adapter_dir(tmp_path)
    bad(d)
    with pytest.raises(ValidationError, match=what):
        prepare_submission(d, "ada", "x", tmp_path, quiet=True)


CHECKS = ["files", "training data", "held-out benchmark", "improvement", "out-of-domain check",
          "data sources documented", "copyright declaration", "registry entry"]


def test_checklist_all_good(tmp_path):
    items = run_checklist(make_adapter_dir(tmp_path))
    assert [i.name for i in items] == CHECKS
    assert all(i.ok for i in items), [i.line() for i in items]


GENERATED_LOG = """# Training log

Written by `quantgrid train`. The exact settings are in `train_config.yaml`.

## Data

- Source: `my_data.train.jsonl` (qa)
- Records read: 550; skipped as invalid: 0
- Dataset fingerprint: `9e55a6e457dbaea8`
"""


@pytest.mark.parametrize("kwargs,edit,name,reason", [
    ({"n_train": 120}, None, "training data", "120 training examples"),
    ({"n_bench": 20}, None, "held-out benchmark", "20 items"),
    ({"delta": 0.05}, None, "improvement", "not lower"),
    ({"ood": False}, None, "out-of-domain check", "no out-of-domain result"),
    ({}, lambda d: (d / "eval/results.json").write_text(results_json().replace('"passed": true', '"passed": false')),
     "out-of-domain check", "rose"),
    # the generated log mentions "source" and "dataset": that is not documenting the sources
    ({"log": GENERATED_LOG + "\n## Copyright\n\nAll of it is my own writing, shared under CC-BY.\n"}, None,
     "data sources documented", "no '## Data sources' section"),
    ({"log": "## Data sources\n\nmine\n\n## Copyright\n\nAll of it is my own writing, CC-BY.\n"}, None,
     "data sources documented", "1 word"),
    ({"log": "## Data sources\n\nGenerated by quantgrid data finance with seed one.\n"}, None,
     "copyright declaration", "no '## Copyright' section"),
    ({"name": "Bad Name!"}, None, "registry entry", "lowercase"),
    ({}, lambda d: (d / "quantgrid.json").write_text((d / "quantgrid.json").read_text().replace(
        '"author":"ada"', '"author":null')), "registry entry", "no author"),
])
def test_checklist_failures_say_why(tmp_path, kwargs, edit, name, reason):
    d = make_adapter_dir(tmp_path, **kwargs)
    if edit:
        edit(d)
    items = {i.name: i for i in run_checklist(d)}
    assert not items[name].ok and reason in items[name].reason, items[name].line()
    assert sum(not i.ok for i in items.values()) == 1, [i.line() for i in items.values() if not i.ok]


def test_checklist_counts_the_examples_supplied_before_the_eval_split(tmp_path):
    """520 supplied, 494 trained on after the 5% split: the 500+ item passes (it failed before)."""
    d = make_adapter_dir(tmp_path, n_train=494)  # the manifest's fingerprint: after the split
    (d / "training/dataset.jsonl").write_text("".join(
        json.dumps({"question": f"q {i} of my own", "answer": f"a {i}"}) + "\n" for i in range(520)))
    item = {i.name: i for i in run_checklist(d)}["training data"]
    assert item.ok and "520 training examples" in item.reason
    # without the dataset copy, the training log's "Records read" (before the split) is the count
    (d / "training/dataset.jsonl").unlink()
    (d / "training/TRAINING_LOG.md").write_text(GENERATED_LOG.replace("550", "520") + SOURCES)
    item = {i.name: i for i in run_checklist(d)}["training data"]
    assert item.ok and "520 training examples" in item.reason and "TRAINING_LOG" in item.reason
    (d / "training/TRAINING_LOG.md").write_text(GENERATED_LOG.replace("550", "480") + SOURCES)
    item = {i.name: i for i in run_checklist(d)}["training data"]
    assert not item.ok and "480 training examples" in item.reason


def test_checklist_reads_eval_leakage_without_the_data(tmp_path):
    d = make_adapter_dir(tmp_path)
    (d / "training/dataset.jsonl").unlink()
    items = {i.name: i for i in run_checklist(d)}
    assert items["held-out benchmark"].ok and "no overlap" in items["held-out benchmark"].reason
    (d / "eval/results.json").write_text(results_json(overlap=12))
    items = {i.name: i for i in run_checklist(d)}
    assert not items["held-out benchmark"].ok and "12 of 60" in items["held-out benchmark"].reason


def test_checklist_finds_leakage_from_opted_in_data(tmp_path):
    d = make_adapter_dir(tmp_path)
    (d / "training/dataset.jsonl").write_text(_bench_rows(600))  # the benchmark is in the training data
    items = {i.name: i for i in run_checklist(d)}
    assert not items["held-out benchmark"].ok and "overlap" in items["held-out benchmark"].reason


def test_checklist_says_a_broken_results_file_is_broken(tmp_path):
    d = make_adapter_dir(tmp_path)
    (d / "eval/results.json").write_text('{"loss": {"delta": -1}}')
    items = {i.name: i for i in run_checklist(d)}
    assert not items["improvement"].ok and "not a quantgrid results file" in items["improvement"].reason


def test_cli_package_and_check(tmp_path):
    d = make_adapter_dir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(d)])
    assert res.exit_code == 0, res.output
    assert res.output.count("✓") == len(CHECKS)
    res = runner.invoke(app, ["package", str(d), "--author", "ada", "--dataset-desc", "finance", "--out",
                              str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "READY FOR UPLOAD!" in res.output and "Left out training/dataset.jsonl: your training data" in res.output
    name = re.search(r"File: (\S+)", res.output).group(1)
    assert (tmp_path / name).is_file()
    (d / "eval/results.json").unlink()
    res = runner.invoke(app, ["check", str(d)])
    assert res.exit_code == 1 and "✗" in res.output
    res = runner.invoke(app, ["package", str(tmp_path / "nope"), "--author", "a", "--dataset-desc", "b"])
    assert res.exit_code == 1 and "not found" in res.output


def test_package_names_the_adapter_and_the_one_it_improves(tmp_path):
    d = make_adapter_dir(tmp_path, name="My Adapter (1)")
    res = package(d, "ada", "x", tmp_path, quiet=True)
    assert verify_submission(res.path).name == "my-adapter-1"  # a valid registry name from the directory
    res = CliRunner().invoke(app, ["package", str(d), "--author", "ada", "--dataset-desc", "x", "--out",
                                   str(tmp_path), "--name", "sec-filings-2", "--improves", "sec-filings"])
    assert res.exit_code == 0, res.output
    z = sorted(tmp_path.glob("quantgrid_submission_*.zip"))[-1]
    m = verify_submission(z)
    assert (m.name, m.improves) == ("sec-filings-2", "sec-filings")
    with pytest.raises(ValidationError, match="lowercase") as err:
        package(d, "ada", "x", tmp_path, quiet=True, improves="SEC Filings!")
    assert "--improves" in err.value.hint


def test_the_routing_profile_of_the_users_questions_stays_home(tmp_path):
    """The manifest's question-word profile (local auto routing) is words of the user's own questions."""
    from quantgrid.data.profile import question_profile

    d = make_adapter_dir(tmp_path)
    questions = [json.loads(line)["question"] for line in (d / "training/dataset.jsonl").read_text().splitlines()]
    m = Manifest.model_validate_json((d / "quantgrid.json").read_text())
    profile = question_profile(questions)
    assert "ledger" in profile["terms"]  # words of the private questions
    (d / "quantgrid.json").write_text(m.model_copy(update={"routing": profile}).model_dump_json())
    out = package(d, "ada", "finance Q&A", tmp_path, quiet=True).path
    with zipfile.ZipFile(out) as zf:
        packed = json.loads(zf.read("quantgrid.json"))
    assert packed["routing"] is None and "ledger" not in json.dumps(packed)
    assert Manifest.model_validate_json((d / "quantgrid.json").read_text()).routing == profile  # kept locally
