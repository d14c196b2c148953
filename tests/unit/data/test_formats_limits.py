"""Dataset files that try to push the parser over: deep nesting, huge lines, huge arrays.
Each gives one clear error naming the file and line, with bounded memory and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app
from quantgrid.data import load_examples_report
from quantgrid.data.formats import MAX_JSON_ARRAY_BYTES, MAX_JSON_DEPTH, MAX_LINE_BYTES
from quantgrid.errors import DataError

GOOD = json.dumps({"question": "What is a bond?", "answer": "A loan."})


def _check(path):
    return CliRunner().invoke(app, ["data", "check", str(path)])


def test_jsonl_nested_5000_deep_is_a_clear_error_not_a_recursion_traceback(tmp_path):
    p = tmp_path / "deep.jsonl"
    p.write_text(GOOD + "\n" + '{"question": ' + "[" * 5000 + "]" * 5000 + ', "answer": "x"}\n')
    r = _check(p)
    assert r.exit_code != 0 and not isinstance(r.exception, RecursionError)
    assert f"{p} line 2: JSON nested more than {MAX_JSON_DEPTH} levels deep" in r.output
    assert "RecursionError" not in r.output and "Traceback" not in r.output


def test_json_array_nested_5000_deep_names_the_line(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[\n" + GOOD + ",\n" + GOOD + ",\n" + "[" * 5000 + "]" * 5000 + "\n]\n")
    with pytest.raises(DataError, match=rf"deep.json line 4: JSON nested more than {MAX_JSON_DEPTH} levels"):
        load_examples_report(p)
    r = _check(p)
    assert "line 4: JSON nested" in r.output and "Traceback" not in r.output


def test_moderately_deep_records_are_refused_and_lenient_skips_them(tmp_path):
    p = tmp_path / "d.jsonl"
    deep = {"question": "q", "answer": "a", "meta": json.loads("[" * (MAX_JSON_DEPTH + 2) + "]" * (MAX_JSON_DEPTH + 2))}
    p.write_text(GOOD + "\n" + json.dumps(deep) + "\n" + GOOD + "\n")
    with pytest.raises(DataError, match="line 2: JSON nested more than"):
        load_examples_report(p)
    report = load_examples_report(p, lenient=True)
    assert len(report.examples) == 2 and [s.location for s in report.skipped] == ["line 2"]


def test_a_line_longer_than_the_limit_is_refused_and_lenient_skips_it(tmp_path):
    p = tmp_path / "long.jsonl"
    with open(p, "w") as f:
        f.write(GOOD + "\n")
        f.write(json.dumps({"question": "q", "answer": "x" * (MAX_LINE_BYTES + 10)}) + "\n")
        f.write(GOOD + "\n")
    with pytest.raises(DataError, match=r"long.jsonl line 2: line is longer than 8 MiB"):
        load_examples_report(p)
    report = load_examples_report(p, lenient=True)
    assert len(report.examples) == 2 and report.skipped[0].location == "line 2"


def test_a_json_array_too_large_to_parse_at_once_asks_for_jsonl(tmp_path):
    p = tmp_path / "huge.json"
    with open(p, "wb") as f:  # sparse: the size check needs no real bytes
        f.write(b"[")
        f.truncate(MAX_JSON_ARRAY_BYTES + 1)
    with pytest.raises(DataError, match="too large to parse at once") as e:
        load_examples_report(p)
    assert "JSONL" in e.value.hint


def test_200_mb_single_line_jsonl_stays_in_bounded_memory(tmp_path):
    """Measured in a fresh process: peak RSS of reading a 200 MB one-line file (before: 6.3 GB)."""
    p = tmp_path / "one-line.jsonl"
    with open(p, "w") as f:
        f.write('{"question": "q", "answer": "')
        block = "x" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write('"}\n')
    script = textwrap.dedent(f"""
        import resource, sys
        from quantgrid.data import load_examples_report
        from quantgrid.errors import DataError
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_examples_report({str(p)!r})
        except DataError as e:
            print("ERROR", e.message)
        print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, base / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"ERROR {p} line 1: line is longer than 8 MiB" in out.stdout
    peak, base = (float(x) for x in out.stdout.split("PEAK_MB")[1].split())
    assert peak - base < 100, f"reading took {peak - base:.0f} MB more than the interpreter's baseline"
