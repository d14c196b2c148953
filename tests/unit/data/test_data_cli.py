"""`quantgrid data ...` end to end through the real CLI (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app
from quantgrid.data import Example, load_examples, load_examples_report
from quantgrid.data.check import check_examples
from quantgrid.data.split import find_leakage

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def qa_file(tmp_path: Path, n: int = 30, name: str = "qa.jsonl") -> Path:
    from quantgrid.data import finance

    return write(tmp_path / name, [e.to_dict() for e in finance.generate(n, seed=4)])


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------- check


def test_check_reports_count_format_lengths_and_warnings(tmp_path):
    p = qa_file(tmp_path)
    with p.open("a") as f:  # one exact duplicate
        f.write(p.read_text().splitlines()[0] + "\n")
    r = run("data", "check", str(p), "--max-seq-length", "40")
    assert r.exit_code == 0, r.output
    assert f"{p}: 31 examples, format qa" in r.output
    assert "lengths in chars (template qa)" in r.output
    assert "warning: only 31 examples; at least 500 are recommended" in r.output
    assert "warning: 1 exact duplicate(s)" in r.output
    assert "longer than max_seq_length=40 tokens will be truncated (an estimate" in r.output


def test_check_json(tmp_path):
    r = run("data", "check", str(qa_file(tmp_path)), "--json")
    report = json.loads(r.output)
    assert report["n_examples"] == 30 and report["format"] == "qa" and report["unit"] == "chars"
    assert report["exact_duplicates"] == 0 and report["n_truncated"] == 0
    assert set(report["lengths"]) == {"prompt", "completion", "total"}


def test_check_builtin_has_no_warnings():
    r = run("data", "check", "builtin:finance-dev")
    assert r.exit_code == 0 and "no problems found" in r.output


def test_check_in_tokens_with_a_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    from quantgrid.ml.models import train_tokenizer

    tok = train_tokenizer(["Question: what is a bond? Answer: a loan to an issuer."] * 50, vocab_size=300)
    report = load_examples_report(write(tmp_path / "d.jsonl", [{"question": "What is a bond?", "answer": "A loan."}]))
    result = check_examples(report, tokenizer=tok, max_seq_length=16)
    prompt_ids = tok("Question: What is a bond?\nAnswer:")["input_ids"]
    completion_ids = tok(" A loan.", add_special_tokens=False)["input_ids"]
    assert result.unit == "tokens"
    assert result.lengths["prompt"].max == len(prompt_ids)
    assert result.lengths["completion"].max == len(completion_ids) + 1  # + eos
    assert result.n_truncated == int(len(prompt_ids) + len(completion_ids) + 1 > 16)
    # The chat template writes its own <s>: no second one from the tokenizer.
    chat = check_examples(report, tokenizer=tok, template="chat")
    chat_prompt = tok.apply_chat_template([{"role": "user", "content": "What is a bond?"}], tokenize=False,
                                          add_generation_prompt=True)
    assert chat.lengths["prompt"].max == len(tok(chat_prompt, add_special_tokens=False)["input_ids"])
    assert chat_prompt.startswith("<s>")


def test_check_bad_file_is_one_clear_line(tmp_path):
    p = write(tmp_path / "bad.jsonl", [{"question": "Q", "answer": "A"}, "{nope"])
    r = run("data", "check", str(p))
    assert r.exit_code == 1
    assert f"error: {p} line 2: invalid JSON: Expecting property name enclosed in double quotes (column 2)" in r.output
    assert "hint:" in r.output and "Traceback" not in r.output


def test_check_lenient_lists_skipped(tmp_path):
    p = write(tmp_path / "bad.jsonl", [{"question": "Q", "answer": "A"}, "{nope", {"question": "Q3"}])
    r = run("data", "check", str(p), "--lenient")
    assert r.exit_code == 0
    assert "2 bad record(s) skipped (--lenient): line 2, line 3" in r.output


# ---------------------------------------------------------------- normalize


def test_normalize_writes_output_and_change_record(tmp_path):
    p = write(tmp_path / "b.jsonl", [
        {"question": "Where did AAPL close on 2024-03-15?", "answer": "At $172.62, up 1.2%.", "tickers": ["AAPL"]},
        {"question": "Where did AAPL close on 2024-03-18?", "answer": "At $173.72, up 0.6%.", "tickers": ["AAPL"]},
        {"question": "What is EPS?", "answer": "Earnings per share."}])
    r = run("data", "normalize", str(p))
    assert r.exit_code == 0, r.output
    out, changes = tmp_path / "b.normalized.jsonl", tmp_path / "b.changes.jsonl"
    assert "2 examples written" in r.output and "1 duplicates removed" in r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"question": "Where did AAPL close on <DATE>?", "answer": "At <PRICE>, up <CHANGE>.",
                       "tickers": ["AAPL"]}
    recs = [json.loads(line) for line in changes.read_text().splitlines()]
    assert [(c["record"], c["original"], c["placeholder"]) for c in recs] == [
        ("line 1", "2024-03-15", "<DATE>"), ("line 1", "$172.62", "<PRICE>"), ("line 1", "1.2%", "<CHANGE>")]


def test_normalize_keeps_the_input_schema(tmp_path):
    p = write(tmp_path / "a.jsonl", [{"instruction": "Price on 2024-01-02?", "input": "", "output": "$10."}])
    assert run("data", "normalize", str(p), "-o", str(tmp_path / "o.jsonl")).exit_code == 0
    assert json.loads((tmp_path / "o.jsonl").read_text()) == {"instruction": "Price on <DATE>?", "input": "",
                                                              "output": "<PRICE>."}


def test_normalize_error_leaves_no_file(tmp_path):
    p = write(tmp_path / "bad.jsonl", [{"question": "Q on 2024-01-01", "answer": "A"}, {"question": "Q2"}])
    r = run("data", "normalize", str(p))
    assert r.exit_code == 1
    assert f"error: {p} line 2: missing field 'answer' (format 'qa', detected from line 1)" in r.output
    assert files(tmp_path) == ["bad.jsonl"]
    r = run("data", "normalize", str(p), "--kinds", "PRICE,NOPE", "--lenient")
    assert r.exit_code == 1 and "unknown placeholder kind(s): NOPE" in r.output
    assert files(tmp_path) == ["bad.jsonl"]


def test_normalize_refuses_to_overwrite_its_input(tmp_path):
    p = qa_file(tmp_path)
    before = p.read_text()
    r = run("data", "normalize", str(p), "--out", str(p))
    assert r.exit_code == 2 and "is the input file; refusing to overwrite it" in r.output
    assert p.read_text() == before


# ---------------------------------------------------------------- split and leakage


def test_split_writes_leak_free_files(tmp_path):
    p = qa_file(tmp_path, n=120)
    r = run("data", "split", str(p), "--benchmark-size", "20", "--seed", "5")
    assert r.exit_code == 0, r.output
    train, bench = tmp_path / "qa.train.jsonl", tmp_path / "qa.benchmark.jsonl"
    t, b = load_examples(train), load_examples(bench)
    assert len(b) == 20 and len(t) == 100
    assert find_leakage(t, b).clean and "leakage check (8-grams, threshold 0.5): clean" in r.output
    # Same seed, same split.
    run("data", "split", str(p), "--benchmark-size", "20", "--seed", "5", "--bench-out", str(tmp_path / "again.jsonl"))
    assert (tmp_path / "again.jsonl").read_text() == bench.read_text()


def test_split_error_leaves_no_files(tmp_path):
    p = qa_file(tmp_path, n=10)
    r = run("data", "split", str(p), "--benchmark-size", "50")
    assert r.exit_code == 1
    assert "10 examples (10 after merging duplicates) are too few for a benchmark of 50" in r.output
    assert files(tmp_path) == ["qa.jsonl"]


def test_leakage_exit_codes_and_json(tmp_path):
    train = qa_file(tmp_path, n=40, name="train.jsonl")
    rows = train.read_text().splitlines()
    bench = write(tmp_path / "bench.jsonl", [rows[3], json.dumps({"question": "A new question?", "answer": "Yes."})])
    r = run("data", "leakage", str(train), str(bench))
    assert r.exit_code == 1
    assert "1 exact, 0 near" in r.output and "1 of 2 benchmark items leak" in r.output
    r = run("data", "leakage", str(train), str(bench), "--json")
    assert json.loads(r.output)["overlaps"] == [{"bench_index": 0, "train_index": 3, "kind": "exact", "score": 1.0}]
    clean = write(tmp_path / "clean.jsonl", [{"question": "A new question?", "answer": "Yes."}])
    r = run("data", "leakage", str(train), str(clean))
    assert r.exit_code == 0 and "no leakage" in r.output


# ---------------------------------------------------------------- finance and list


def test_finance_is_reproducible(tmp_path):
    a = run("data", "finance", "--n", "5", "--seed", "3").output
    assert a == run("data", "finance", "--n", "5", "--seed", "3").output
    assert a != run("data", "finance", "--n", "5", "--seed", "4").output
    assert len(a.splitlines()) == 5 and all("answer_value" in json.loads(line) for line in a.splitlines())
    r = run("data", "finance", "--n", "20", "--seed", "1", "--topics", "options", "--out", str(tmp_path / "f.jsonl"))
    assert r.exit_code == 0
    got = load_examples(tmp_path / "f.jsonl")
    assert len(got) == 20 and {e.meta["topic"] for e in got} == {"options"}


def test_finance_topics_and_errors():
    r = run("data", "finance", "--list-topics")
    assert "fixed_income" in r.output.split()
    r = run("data", "finance", "--topics", "astrology")
    assert r.exit_code == 1 and "unknown finance topic(s): astrology" in r.output


def test_list_shows_builtins_and_formats():
    r = run("data", "list")
    assert r.exit_code == 0
    for name in ("builtin:finance-train", "builtin:finance-dev", "builtin:general-ood", "alpaca", "messages"):
        assert name in r.output


def test_help_for_every_data_command():
    for cmd in ("check", "normalize", "split", "leakage", "finance", "list"):
        r = run("data", cmd, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output


def test_written_records_roundtrip_examples(tmp_path):
    from quantgrid.data import write_records

    exs = [Example("Q1", "A1", "C1", {"topic": "x"}), Example("Q2", "A2")]
    back = load_examples(write_records(tmp_path / "w.jsonl", exs))
    assert [(e.prompt, e.completion, e.context) for e in back] == [(e.prompt, e.completion, e.context) for e in exs]


def test_written_whole_text_examples_reload(tmp_path):
    from quantgrid.data import write_records

    exs = [Example("", "Just a paragraph about bonds."), Example("What is a bond?", "A loan.", "Ctx.")]
    back = load_examples(write_records(tmp_path / "w.jsonl", exs))
    assert [(e.prompt, e.completion, e.context) for e in back] == [(e.prompt, e.completion, e.context) for e in exs]


def test_check_cli_with_a_tokenizer_only_directory(tmp_path):
    pytest.importorskip("tokenizers")
    from quantgrid.ml.models import train_tokenizer

    tok = train_tokenizer(["Question: what is a bond? Answer: a loan to an issuer."] * 50, vocab_size=300)
    tok.save_pretrained(tmp_path / "tok")
    r = run("data", "check", str(qa_file(tmp_path)), "--tokenizer", str(tmp_path / "tok"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["unit"] == "tokens"
