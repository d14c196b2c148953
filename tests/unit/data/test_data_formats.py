"""Every schema loads; every bad input gets an exact, located error; --lenient skips and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantgrid.data import Example, load_examples, load_examples_report
from quantgrid.data.formats import FORMATS, detect_format, read_file, write_records
from quantgrid.errors import DataError


def jsonl(tmp_path: Path, records: list, name: str = "d.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return p


def error(path: Path, **kw) -> DataError:
    with pytest.raises(DataError) as e:
        load_examples(path, **kw)
    return e.value


# ---------------------------------------------------------------- each schema


def test_text_with_marker_splits_question_and_answer(tmp_path):
    p = jsonl(tmp_path, [{"text": "Question: What is EPS?\nAnswer: Earnings per share."}])
    [ex] = load_examples(p)
    assert (ex.prompt, ex.completion, ex.context) == ("What is EPS?", "Earnings per share.", None)
    assert load_examples_report(p).format == "text"


def test_text_with_context_header_keeps_the_context(tmp_path):
    p = jsonl(tmp_path, [{"text": "Context: AAPL at <PRICE>\nQuestion: Price?\nAnswer: <PRICE>."}])
    [ex] = load_examples(p)
    assert (ex.context, ex.prompt, ex.completion) == ("AAPL at <PRICE>", "Price?", "<PRICE>.")


def test_text_without_marker_trains_on_the_whole_text(tmp_path):
    text = "Bonds fall when rates rise because fixed coupons are discounted more."
    [ex] = load_examples(jsonl(tmp_path, [{"text": text}]))
    assert ex.prompt == "" and ex.completion == text


def test_instruction_completion(tmp_path):
    [ex] = load_examples(jsonl(tmp_path, [{"instruction": "Define beta.", "completion": "Market sensitivity."}]))
    assert (ex.prompt, ex.completion) == ("Define beta.", "Market sensitivity.")
    assert load_examples_report(tmp_path / "d.jsonl").format == "instruction_completion"


def test_alpaca_with_input_and_with_empty_input(tmp_path):
    p = jsonl(tmp_path, [{"instruction": "Summarize.", "input": "Revenue rose 5%.", "output": "Growth."},
                         {"instruction": "Define ROE.", "input": "", "output": "Net income / equity."}])
    a, b = load_examples(p)
    assert (a.prompt, a.context, a.completion) == ("Summarize.", "Revenue rose 5%.", "Growth.")
    assert (b.prompt, b.context, b.completion) == ("Define ROE.", None, "Net income / equity.")
    assert load_examples_report(p).format == "alpaca"


def test_instruction_output(tmp_path):
    p = jsonl(tmp_path, [{"instruction": "Define VaR.", "output": "A loss quantile."}])
    [ex] = load_examples(p)
    assert (ex.prompt, ex.completion) == ("Define VaR.", "A loss quantile.")
    assert load_examples_report(p).format == "instruction_output"


def test_bullishai_qa_with_every_optional_field_and_numeric_answer(tmp_path):
    rec = {"question": "Price of AAPL?", "answer": "It trades at <PRICE>.", "context": "AAPL <PRICE>",
           "rationale": "From the quote.", "tickers": ["AAPL"], "citations": [{"source": "api", "timestamp": "<TIMESTAMP>"}],
           "context_required": True, "risk_note": "Not advice."}
    p = jsonl(tmp_path, [rec, {"question": "2 + 2?", "answer": 4}, {"question": "Half?", "answer": 0.5}])
    a, b, c = load_examples(p)
    assert (a.prompt, a.completion, a.context) == ("Price of AAPL?", "It trades at <PRICE>.", "AAPL <PRICE>")
    assert a.meta["tickers"] == ["AAPL"] and a.meta["context_required"] is True
    assert a.meta["citations"] == [{"source": "api", "timestamp": "<TIMESTAMP>"}]
    assert (b.completion, b.meta["answer_value"]) == ("4", 4.0)
    assert (c.completion, c.meta["answer_value"]) == ("0.5", 0.5)


def test_openai_messages_with_system_and_history(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is a bond?"},
            {"role": "assistant", "content": "A loan to an issuer."}]
    [ex] = load_examples(jsonl(tmp_path, [{"messages": msgs}]))
    assert (ex.prompt, ex.completion) == ("What is a bond?", "A loan to an issuer.")
    assert ex.meta["system"] == "Be brief."
    assert ex.meta["history"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]


def test_json_array_and_utf8_bom(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"question": "Q1", "answer": "A1"}, {"question": "Q2", "answer": "A2"}]).encode())
    report = load_examples_report(p)
    assert [e.prompt for e in report.examples] == ["Q1", "Q2"] and report.container == "json"
    assert report.examples[1].meta["line"] == "index 1"


def test_format_override_reads_a_record_as_that_format(tmp_path):
    # A record with both keys would be detected as qa; --format text trains on the text field.
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A", "text": "whole text"}])
    assert load_examples(p)[0].prompt == "Q"
    [ex] = load_examples(p, format="text")
    assert (ex.prompt, ex.completion) == ("", "whole text")


def test_unknown_format_name_lists_the_choices(tmp_path):
    e = error(jsonl(tmp_path, [{"question": "Q", "answer": "A"}]), format="sharegpt")
    assert e.message == "unknown dataset format 'sharegpt'"
    assert "messages, alpaca, instruction_output, instruction_completion, qa, text" in e.hint


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_round_trips_through_dump_and_parse(tmp_path, name):
    ex = Example("What is NPV?", "The sum of discounted cash flows.", "Rates are 5%.", {"topic": "t"})
    p = write_records(tmp_path / f"{name}.jsonl", [ex], name)
    [back] = load_examples(p, format=name)
    assert (back.prompt, back.completion) == (ex.prompt, ex.completion)
    assert back.context == ex.context
    # Without context every dump is detected as its own format again.
    plain = write_records(tmp_path / "plain.jsonl", [Example("Q?", "A.")], name)
    assert detect_format(json.loads(plain.read_text())).name == name


# ---------------------------------------------------------------- every bad input, exact messages


def test_invalid_json_names_file_and_line(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A"}, '{"question": "Q2", "answer": }'])
    e = error(p)
    assert e.message == f"{p} line 2: invalid JSON: Expecting value (column 30)"
    assert e.hint == "each line of a JSONL file must be one complete JSON object"


def test_invalid_json_in_an_array_names_line_and_column(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n{"question": "Q", "answer": "A"},\n{"question": "Q2" "answer": "B"}\n]')
    assert error(p).message == f"{p} line 3 column 19: invalid JSON: Expecting ',' delimiter"


def test_missing_field(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A"}, {"question": "Q2"}])
    assert error(p).message == f"{p} line 2: missing field 'answer' (format 'qa', detected from line 1)"


def test_missing_field_with_format_given(tmp_path):
    p = jsonl(tmp_path, [{"instruction": "I", "output": "O"}])
    assert error(p, format="alpaca").message == f"{p} line 1: missing field 'input' (format 'alpaca', given by --format)"


def test_missing_fields_in_a_json_array_name_the_index(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"instruction": "I", "completion": "C"}, {"instruction": "J"}]))
    assert error(p).message == (f"{p} index 1: missing field 'completion' "
                                "(format 'instruction_completion', detected from index 0)")


def test_wrong_types(tmp_path):
    p = jsonl(tmp_path, [{"question": ["not", "text"], "answer": "A"}])
    assert error(p).message == f"{p} line 1: field 'question' must be a string, got an array"
    p = jsonl(tmp_path, [{"question": "Q", "answer": {"v": 1}}])
    assert error(p).message == f"{p} line 1: field 'answer' must be a string or a number, got an object"
    p = jsonl(tmp_path, [{"question": "Q", "answer": True}])
    assert error(p).message == f"{p} line 1: field 'answer' must be a string or a number, got a boolean"
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A", "tickers": "AAPL"}])
    assert error(p).message == f"{p} line 1: field 'tickers' must be an array of strings, got a string"
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A"}, [1, 2]])
    assert error(p).message == f"{p} line 2: a record must be a JSON object, got an array"


def test_messages_errors(tmp_path):
    p = jsonl(tmp_path, [{"messages": [{"role": "user", "content": "Q"}]}])
    assert error(p).message == f"{p} line 1: the last message must be the assistant's answer (role 'assistant')"
    p = jsonl(tmp_path, [{"messages": [{"role": "user", "content": "Q"}, {"role": "bot", "content": "A"}]}])
    assert error(p).message == f"{p} line 1: messages[1] has role 'bot'; use system, user or assistant"


def test_empty_completion(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A"}, {"question": "Q2", "answer": "   "}])
    assert error(p).message == f"{p} line 2: empty completion: field 'answer' has no text to train on"
    p = jsonl(tmp_path, [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}]}])
    assert error(p).message == f"{p} line 1: empty completion: the last assistant message has no text"


def test_mixed_schemas(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A"}, {"instruction": "I", "output": "O"}])
    e = error(p)
    assert e.message == (f"{p} line 2: mixed schemas: this record is 'instruction_output' but the file is 'qa' "
                         "(detected from line 1)")
    assert e.hint == "use one schema per file: convert the records, or split the file"


def test_unknown_schema(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "Q", "response": "A"}])
    e = error(p)
    assert e.message == f"{p} line 1: unknown schema with keys ['prompt', 'response']"
    assert e.hint.startswith("use one of: messages | instruction+input+output |")


def test_not_utf8(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"question": "Q", "answer": "A"}\n{"question": "caf\xe9", "answer": "A"}\n')
    e = error(p)
    assert e.message == f"{p} line 2: not UTF-8 text (byte 0xe9)"
    assert e.hint == "save the file as UTF-8"
    a = tmp_path / "d.json"
    a.write_bytes(b'[{"question": "Q", "answer": "A"},\n {"question": "\xff", "answer": "A"}]')
    assert error(a).message == f"{a} line 2: not UTF-8 text (byte 0xff)"


def test_empty_file(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("  \n\n")
    assert error(p).message == f"{p}: the file is empty"
    a = tmp_path / "d.json"
    a.write_text("[]")
    assert error(a).message == f"{a}: the JSON array has no records"


def test_file_too_large(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q" * 2000, "answer": "A"}])
    with pytest.raises(DataError) as e:
        read_file(p, max_bytes=1024)
    assert e.value.message == f"{p}: 0.0 MiB is too large to be a dataset (limit 0 MiB)"
    assert e.value.hint == "check that this is the right file, or split it into several smaller files"


def test_file_too_large_default_limit(tmp_path, monkeypatch):
    from quantgrid.data import formats

    monkeypatch.setattr(formats, "MAX_DATASET_BYTES", 3 * 2**20)
    p = tmp_path / "big.jsonl"
    p.write_bytes(b" " * (4 * 2**20))
    assert error(p).message == f"{p}: 4.0 MiB is too large to be a dataset (limit 3 MiB)"


def test_missing_path_and_directory(tmp_path):
    assert error(tmp_path / "nope.jsonl").message == f"{tmp_path / 'nope.jsonl'}: no such file"
    assert error(tmp_path).message == f"{tmp_path}: is a directory, not a dataset file"


def test_pretty_printed_single_object_is_explained(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"question": "Q", "answer": "A"}, indent=2))
    assert error(p).message == f"{p}: a JSON file must hold an array of records, got one object"


# ---------------------------------------------------------------- lenient


def test_lenient_skips_bad_records_and_reports_which(tmp_path, caplog):
    p = jsonl(tmp_path, [{"question": "Q1", "answer": "A1"}, "{broken", {"question": "Q3"},
                         {"question": "Q4", "answer": ""}, {"instruction": "I", "output": "O"},
                         {"question": "Q6", "answer": "A6"}])
    report = load_examples_report(p, lenient=True)
    assert [e.prompt for e in report.examples] == ["Q1", "Q6"]
    assert [s.location for s in report.skipped] == ["line 2", "line 3", "line 4", "line 5"]
    assert report.skipped[1].reason == "missing field 'answer' (format 'qa', detected from line 1)"
    assert report.n_skipped == 4
    assert "skipped 4 bad record(s): line 2, line 3, line 4, line 5" in caplog.text


def test_lenient_detects_the_format_from_the_first_good_record(tmp_path):
    p = jsonl(tmp_path, ["not json", {"instruction": "I", "output": "O"}])
    report = load_examples_report(p, lenient=True)
    assert report.format == "instruction_output" and len(report.examples) == 1


def test_lenient_skips_non_utf8_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"question": "\xff", "answer": "A"}\n{"question": "Q", "answer": "A"}\n')
    report = load_examples_report(p, lenient=True)
    assert len(report.examples) == 1 and report.skipped[0].reason == "not UTF-8 text (byte 0xff)"


def test_lenient_with_nothing_usable_still_fails(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q", "answer": ""}, {"question": "Q2", "answer": " "}])
    assert error(p, lenient=True).message == (
        f"{p}: no usable records; all 2 records were bad, e.g. line 1: empty completion: field 'answer' has no "
        "text to train on")


def test_examples_remember_file_and_line(tmp_path):
    p = jsonl(tmp_path, [{"question": "Q", "answer": "A"}, "", {"question": "Q3", "answer": "A"}])
    assert [e.meta["line"] for e in load_examples(p)] == ["line 1", "line 3"]
    assert load_examples(p)[0].meta["source"] == "d.jsonl"


# ---------------------------------------------------------------- properties

_text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_text, _text, st.one_of(st.none(), _text)), min_size=1, max_size=5),
       name=st.sampled_from(["qa", "alpaca", "instruction_completion", "messages"]))
def test_any_text_round_trips(tmp_path, rows, name):
    exs = [Example(q, a, c) for q, a, c in rows]
    back = load_examples(write_records(tmp_path / "h.jsonl", exs, name), format=name)
    assert [(e.prompt, e.completion, e.context) for e in back] == [(e.prompt, e.completion, e.context) for e in exs]


def test_windows_line_endings_and_bom_in_jsonl(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"question": "Q1", "answer": "A1"}\r\n{"question": "Q2", "answer": "A2"}\r\n')
    assert [(e.prompt, e.completion) for e in load_examples(p)] == [("Q1", "A1"), ("Q2", "A2")]
