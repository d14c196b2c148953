"""Placeholders as in the BullishAI guide, with a record of every change."""

from __future__ import annotations

import pytest

from quantgrid.data import Example
from quantgrid.data.normalize import KINDS, normalize_examples, normalize_text
from quantgrid.errors import DataError

CASES = [
    ("AAPL trades at $189.43.", "AAPL trades at <PRICE>.", ["$189.43"]),
    ("It is up 2.3% today.", "It is up <CHANGE> today.", ["2.3%"]),
    ("Shares fell by $1.20 (-0.8%).", "Shares fell by <CHANGE> (<CHANGE>).", ["$1.20", "-0.8%"]),
    ("Gained 3 percent", "Gained <CHANGE>", ["3 percent"]),
    ("Margin is 12% of sales.", "Margin is <PERCENT> of sales.", ["12%"]),
    ("As of 2024-03-15T14:30:00Z.", "As of <TIMESTAMP>.", ["2024-03-15T14:30:00Z"]),
    ("Close at 4:00 PM ET.", "Close at <TIMESTAMP>.", ["4:00 PM ET"]),
    ("ts 1710513000 end", "ts <TIMESTAMP> end", ["1710513000"]),
    ("Filed 2024-03-15 and 03/01/2024.", "Filed <DATE> and <DATE>.", ["2024-03-15", "03/01/2024"]),
    ("On March 5, 2024 and 5 Mar 2024, then Jan 2025.", "On <DATE> and <DATE>, then <DATE>.",
     ["March 5, 2024", "5 Mar 2024", "Jan 2025"]),
    ("Revenue was $2.5B and $300 million.", "Revenue was <AMOUNT> and <AMOUNT>.", ["$2.5B", "$300 million"]),
    ("Volume 12.5M shares and 1,200 contracts.", "Volume <VOLUME> shares and <VOLUME> contracts.", ["12.5M", "1,200"]),
    ("Price 45.10 USD.", "Price <PRICE>.", ["45.10 USD"]),
    ("The S&P 500 and a 10-K, Q3 2023-2024.", "The S&P 500 and a 10-K, Q3 2023-2024.", []),
]


@pytest.mark.parametrize(("text", "expected", "originals"), CASES)
def test_placeholders(text, expected, originals):
    new, changes = normalize_text(text)
    assert new == expected
    assert [c[1] for c in changes] == originals
    for offset, original, _ in changes:
        assert text[offset:offset + len(original)] == original  # offsets point into the original


def test_idempotent_and_number_is_opt_in():
    once, _ = normalize_text("AAPL at $10, up 5% on 2024-01-02; 7 analysts")
    assert normalize_text(once) == (once, [])
    assert "7 analysts" in once
    assert normalize_text("7 analysts", kinds=KINDS)[0] == "<NUMBER> analysts"


def test_kinds_select_and_unknown_kind():
    assert normalize_text("$5 up 3%", kinds=["PRICE"])[0] == "<PRICE> up 3%"
    with pytest.raises(DataError) as e:
        normalize_text("x", kinds=["PRICES"])
    assert e.value.message == "unknown placeholder kind(s): PRICES"


def test_examples_all_fields_change_record_and_dedup():
    a = Example("What did AAPL close at on 2024-03-15?", "It closed at $172.62, up 1.2%.", "AAPL $172.62",
                {"line": "line 1", "citations": [{"source": "api", "timestamp": "2024-03-15T20:00:00Z"}],
                 "answer_value": 172.62, "tickers": ["AAPL"]})
    b = Example("What did AAPL close at on 2024-03-18?", "It closed at $173.72, up 0.6%.", "AAPL $173.72",
                {"line": "line 2", "citations": [{"source": "api", "timestamp": "2024-03-18T20:00:00Z"}],
                 "answer_value": 173.72, "tickers": ["AAPL"]})
    result = normalize_examples([a, b])
    assert result.duplicates_removed == 1 and len(result.examples) == 1
    [n] = result.examples
    assert n.prompt == "What did AAPL close at on <DATE>?"
    assert n.completion == "It closed at <PRICE>, up <CHANGE>."
    assert n.context == "AAPL <PRICE>"
    assert n.meta["citations"] == [{"source": "api", "timestamp": "<TIMESTAMP>"}]
    assert "answer_value" not in n.meta and n.meta["tickers"] == ["AAPL"]
    assert [(c.record, c.field, c.original, c.placeholder) for c in result.changes] == [
        ("line 1", "prompt", "2024-03-15", "<DATE>"),
        ("line 1", "completion", "$172.62", "<PRICE>"),
        ("line 1", "completion", "1.2%", "<CHANGE>"),
        ("line 1", "context", "$172.62", "<PRICE>"),
        ("line 1", "citations[0].timestamp", "2024-03-15T20:00:00Z", "<TIMESTAMP>"),
    ]
    assert result.counts() == {"<CHANGE>": 1, "<DATE>": 1, "<PRICE>": 2, "<TIMESTAMP>": 1}
    assert len(normalize_examples([a, b], dedup=False).examples) == 2
