"""User mistakes end in one ``error:`` line and a ``hint:``, never a traceback, with exit
code 2 for a usage error (a wrong flag or setting) and 1 for a runtime error (a missing,
corrupt or unwritable file, an unreachable hub). User text is printed as itself, even
when it looks like Rich markup."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app

DEAD_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens there


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "a_file").write_text("not a directory\n")
    (tmp / "bad.yaml").write_text("lora_rank: [1,\n")
    (tmp / "list.yaml").write_text("- a list\n")
    (tmp / "a_dir").mkdir()
    return {"tmp": str(tmp)}


CASES = [
    # (name, argv, exit code, text the error line must contain)
    ("unwritable output path", ["data", "finance", "--n", "3", "--out", "{tmp}/a_file/x.jsonl"], 1, "a_file"),
    ("output path under /proc", ["data", "finance", "--n", "3", "--out", "/proc/quantgrid-test/x.jsonl"], 1,
     "/proc/quantgrid-test"),
    ("output path is a directory", ["data", "finance", "--n", "3", "--out", "{tmp}/a_dir"], 1, "a_dir"),
    ("missing data file", ["data", "check", "{tmp}/nope.jsonl"], 1, "nope.jsonl"),
    ("missing --config file", ["train", "--config", "{tmp}/nope.yaml", "-d", "x", "-o", "o"], 1, "nope.yaml"),
    ("missing recipe file", ["recipe", "check", "{tmp}/nope.yaml"], 1, "nope.yaml"),
    ("bad YAML in --config", ["train", "--config", "{tmp}/bad.yaml", "-d", "x", "-o", "o"], 1, "not valid YAML"),
    ("YAML that is not a mapping", ["train", "--config", "{tmp}/list.yaml", "-d", "x", "-o", "o"], 1, "mapping"),
    ("bad YAML in hub --config", ["hub", "serve", "--config", "{tmp}/bad.yaml"], 1, "not valid YAML"),
    ("bad flag value (model)", ["train", "-d", "x", "-o", "o", "--lora-rank", "0"], 2, "--lora-rank"),
    ("bad flag value (type)", ["train", "-d", "x", "-o", "o", "--lora-rank", "many"], 2, "--lora-rank"),
    ("bad flag value (choice)", ["serve", "--base", "b", "--router", "magic"], 2, "--router"),
    ("unknown flag", ["train", "--lora-rnak", "8"], 2, "--lora-rnak"),
    ("unknown setting in --config", ["eval", "-b", "x", "--limit", "0"], 2, "--limit"),
    ("dead hub URL", ["leaderboard", "--hub", DEAD_HUB], 1, "cannot reach the hub"),
    ("dead hub URL for the recipe", ["train", "--hub", DEAD_HUB, "-d", "x", "-o", "o", "--base-model", "b"], 1,
     "cannot reach the hub"),
    ("markup in a path", ["data", "check", "{tmp}/x[/red].jsonl"], 1, "x[/red].jsonl"),
    ("markup in a --config path", ["train", "--config", "{tmp}/[bold]c[/].yaml", "-d", "x", "-o", "o"], 1,
     "[bold]c[/].yaml"),
]


def _assert_one_clear_error(r, code: int, needle: str) -> None:
    out = r.output
    assert "Traceback" not in out and r.exception is None or isinstance(r.exception, SystemExit), out
    assert r.exit_code == code, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    assert needle in lines[0], out
    assert "hint:" in out, out


@pytest.mark.parametrize("name,argv,code,needle", CASES, ids=[c[0] for c in CASES])
def test_user_mistake(name, argv, code, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QUANTGRID_HUB", raising=False)
    monkeypatch.setenv("QUANTGRID_CONFIG_DIR", str(tmp_path / "config"))
    values = _files(tmp_path)
    r = CliRunner().invoke(app, [a.format(**values) for a in argv])
    _assert_one_clear_error(r, code, needle)


def test_corrupt_safetensors_is_one_line(tiny_base, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8, '
                                                 '"target_modules": ["q_proj"]}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    r = CliRunner().invoke(app, ["export", "gguf", "--adapter", str(adapter), "--base", tiny_base,
                                 "--out", str(tmp_path / "a.gguf")])
    _assert_one_clear_error(r, 1, "safetensors")
    assert not (tmp_path / "a.gguf").exists()


def test_error_printer_survives_markup_in_messages(capsys):
    from quantgrid.cli._common import report_error
    from quantgrid.errors import DataError

    report_error(DataError("cannot read data[/red]/x[bold].jsonl", hint="look at [/] and [link=x]"))
    err = capsys.readouterr().err
    assert "data[/red]/x[bold].jsonl" in err and "[/] and [link=x]" in err


def test_data_check_table_prints_a_markup_path_as_itself(tmp_path):
    import json

    p = tmp_path / "x[/red][bold].jsonl"  # a folder "x[" holding "red][bold].jsonl"
    p.parent.mkdir()
    p.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(5)))
    r = CliRunner().invoke(app, ["data", "check", str(p)])
    assert r.exit_code == 0, r.output
    assert "x[/red][bold].jsonl" in r.output
